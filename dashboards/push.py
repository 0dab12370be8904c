"""Send the datasource, the folder and the dashboards to a running Grafana over its HTTP
API (grafana-client). Idempotent: the datasource is created or updated by its fixed uid,
the folder created once, each dashboard saved with ``overwrite``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from aquavolt.dashboards.build import FOLDER
from aquavolt.dashboards.grafana import DATASOURCE_UID
from aquavolt.errors import AquavoltError

log = logging.getLogger("aquavolt.dashboards")


class PushError(AquavoltError):
    """Grafana refused or could not be reached."""


@dataclass(frozen=True)
class PushResult:
    datasource: str  # "created" or "updated"
    folder_uid: str
    dashboards: list[str]  # uids saved


def connect(url: str, token: str | None = None, user: str | None = None, password: str | None = None,
            timeout_s: float = 10.0) -> GrafanaApi:
    credential: str | tuple[str, str] | None = token or ((user, password or "") if user else None)
    return GrafanaApi.from_url(url, credential=credential, timeout=timeout_s)


def push(api: GrafanaApi, datasource: dict[str, Any], boards: list[dict[str, Any]]) -> PushResult:
    try:
        try:
            current = api.datasource.get_datasource_by_uid(DATASOURCE_UID)
            api.datasource.update_datasource(current["id"], {**datasource, "id": current["id"]})
            ds_outcome = "updated"
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.datasource.create_datasource(datasource)
            ds_outcome = "created"
        try:
            folder_uid = api.folder.get_folder(FOLDER)["uid"]
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            folder_uid = api.folder.create_folder(FOLDER, uid=FOLDER)["uid"]
        saved = []
        for board in boards:
            body = {"dashboard": {**board, "id": None}, "folderUid": folder_uid, "overwrite": True,
                    "message": "aquavolt dashboards push"}
            api.dashboard.update_dashboard(body)
            saved.append(board["uid"])
            log.info("saved dashboard %s", board["uid"])
    except (GrafanaException, niquests.exceptions.RequestException) as exc:
        raise PushError(f"Grafana at {api.client.url_host}: {exc}") from None
    return PushResult(ds_outcome, folder_uid, saved)
