# ruff: noqa: E501  (translation tables: one phrase a line)
"""The console's words in English, French and Arabic (right to left), by the operator's choice.

The English text is the key (as gettext does): a string without a translation is shown in
English. The language is ``?lang=en|fr|ar`` (kept in the cookie ``av_lang``), else the
browser's ``Accept-Language``, else English. ``JS`` are the words the page's script needs; the
page embeds them as a JSON data block (not executed, so the Content-Security-Policy holds).
Names from the field, operators' comments and alarm messages are shown as they are.
"""

from __future__ import annotations

from contextvars import ContextVar

LANGUAGES = {"en": "English", "fr": "Français", "ar": "العربية"}
RTL = {"ar"}
LANG: ContextVar[str] = ContextVar("console_lang", default="en")

FR: dict[str, str] = {
    "Alarms": "Alarmes",
    "Commands": "Commandes",
    "Performance": "Performance",
    "Sign in": "Connexion",
    "Sign out": "Déconnexion",
    "Your operator token": "Votre jeton d'opérateur",
    "Console": "Console",
    "Unknown token.": "Jeton inconnu.",
    "The sign-in form expired or came from another site: sign in again.": "Le formulaire de connexion a expiré ou vient d'un autre site : reconnectez-vous.",
    "critical": "critique",
    "high": "haute",
    "medium": "moyenne",
    "low": "basse",
    "Unacknowledged": "Non acquittée",
    "Acknowledged": "Acquittée",
    "Returned, unacknowledged": "Retour à la normale, non acquittée",
    "Shelved": "Mise de côté",
    "Suppressed": "Supprimée",
    "Out of service": "Hors service",
    "Normal": "Normale",
    "Priority": "Priorité",
    "State": "État",
    "Raised": "Apparue",
    "Asset": "Équipement",
    "Place": "Lieu",
    "Message": "Message",
    "Outage": "Coupure",
    "Actions": "Actions",
    "Alarms (live)": "Alarmes (en direct)",
    "Active alarms by priority": "Alarmes actives par priorité",
    "Acknowledge what is shown": "Acquitter ce qui est affiché",
    "Show shelved and suppressed": "Afficher les alarmes mises de côté et supprimées",
    "Shelve": "Mettre de côté",
    "Reason": "Motif",
    "For (hours, at most 168)": "Pour (heures, 168 au plus)",
    "Cancel": "Annuler",
    "Alarms of": "Alarmes de",
    "all alarms": "toutes les alarmes",
    "History (newest first)": "Historique (le plus récent d'abord)",
    "When": "Quand",
    "What": "Quoi",
    "Who": "Qui",
    "Comment": "Commentaire",
    "Add comment": "Ajouter le commentaire",
    "Dashboard of": "Tableau de bord de",
    "No such alarm": "Alarme inconnue",
    "Alarm": "Alarme",
    "Start / on": "Démarrer / marche",
    "Stop / off": "Arrêter / arrêt",
    "New value": "Nouvelle valeur",
    "Send": "Envoyer",
    "gateway": "passerelle",
    "last value read back": "dernière valeur relue",
    "unknown": "inconnue",
    "Your role may not issue commands.": "Votre rôle ne permet pas de commander.",
    "The field allows no commands.": "Le terrain n'autorise aucune commande.",
    "Confirm the command": "Confirmer la commande",
    "Send the command": "Envoyer la commande",
    "Command log (newest first)": "Journal des commandes (le plus récent d'abord)",
    "Issued": "Émise",
    "Operator": "Opérateur",
    "Command": "Commande",
    "Reply": "Réponse",
    "Why": "Pourquoi",
    "Alarm system performance": "Performance du système d'alarmes",
    "EEMUA 191 figures of the last {hours} hours of event time.": "Indicateurs EEMUA 191 des {hours} dernières heures (temps des événements).",
    "Language": "Langue",
    # the page's script
    "Acknowledge": "Acquitter",
    "Unshelve": "Remettre en service",
    "History": "Historique",
    "Dashboard": "Tableau de bord",
    "customers": "clients",
    "Acknowledged {n}": "{n} acquittée(s)",
    ", {n} raised since you looked were not": ", {n} apparue(s) depuis n'ont pas été acquittées",
    "Refused": "Refusé",
    "Nothing to acknowledge": "Rien à acquitter",
    "Connection lost: reconnecting…": "Connexion perdue : reconnexion…",
    "Shelved {id} until {t}": "{id} mise de côté jusqu'à {t}",
    "Unshelved {id}": "{id} remise en service",
    "Command {id} sent: waiting for the gateway's reply": "Commande {id} envoyée : en attente de la passerelle",
    "{point}: now {current}, set to {value}?": "{point} : actuellement {current}, régler à {value} ?",
    "waiting": "en attente",
    "Enter a value inside the range": "Saisissez une valeur dans la plage",
    "shelved until {t}: {reason}": "mise de côté jusqu'à {t} : {reason}",
    "{n} consequences": "{n} conséquence(s)",
}

AR: dict[str, str] = {
    "Alarms": "الإنذارات",
    "Commands": "الأوامر",
    "Performance": "الأداء",
    "Sign in": "تسجيل الدخول",
    "Sign out": "تسجيل الخروج",
    "Your operator token": "رمز المشغّل الخاص بك",
    "Console": "وحدة التحكم",
    "Unknown token.": "رمز غير معروف.",
    "The sign-in form expired or came from another site: sign in again.": "انتهت صلاحية نموذج الدخول أو جاء من موقع آخر: سجّل الدخول من جديد.",
    "critical": "حرجة",
    "high": "عالية",
    "medium": "متوسطة",
    "low": "منخفضة",
    "Unacknowledged": "غير مُقَرّ بها",
    "Acknowledged": "مُقَرّ بها",
    "Returned, unacknowledged": "عادت إلى الوضع الطبيعي، غير مُقَرّ بها",
    "Shelved": "مؤجّلة",
    "Suppressed": "مكبوتة",
    "Out of service": "خارج الخدمة",
    "Normal": "طبيعية",
    "Priority": "الأولوية",
    "State": "الحالة",
    "Raised": "وقت الظهور",
    "Asset": "المعدّة",
    "Place": "الموقع",
    "Message": "الرسالة",
    "Outage": "الانقطاع",
    "Actions": "الإجراءات",
    "Alarms (live)": "الإنذارات (مباشر)",
    "Active alarms by priority": "الإنذارات النشطة حسب الأولوية",
    "Acknowledge what is shown": "الإقرار بما هو معروض",
    "Show shelved and suppressed": "إظهار المؤجّلة والمكبوتة",
    "Shelve": "تأجيل",
    "Reason": "السبب",
    "For (hours, at most 168)": "المدة (بالساعات، 168 على الأكثر)",
    "Cancel": "إلغاء",
    "Alarms of": "إنذارات",
    "all alarms": "كل الإنذارات",
    "History (newest first)": "السجل (الأحدث أولاً)",
    "When": "متى",
    "What": "ماذا",
    "Who": "من",
    "Comment": "تعليق",
    "Add comment": "إضافة تعليق",
    "Dashboard of": "لوحة متابعة",
    "No such alarm": "إنذار غير موجود",
    "Alarm": "إنذار",
    "Start / on": "تشغيل",
    "Stop / off": "إيقاف",
    "New value": "القيمة الجديدة",
    "Send": "إرسال",
    "gateway": "البوابة",
    "last value read back": "آخر قيمة مقروءة",
    "unknown": "غير معروفة",
    "Your role may not issue commands.": "لا يسمح دورك بإصدار الأوامر.",
    "The field allows no commands.": "لا يسمح الميدان بأي أمر.",
    "Confirm the command": "تأكيد الأمر",
    "Send the command": "إرسال الأمر",
    "Command log (newest first)": "سجل الأوامر (الأحدث أولاً)",
    "Issued": "وقت الإصدار",
    "Operator": "المشغّل",
    "Command": "الأمر",
    "Reply": "الرد",
    "Why": "السبب",
    "Alarm system performance": "أداء نظام الإنذارات",
    "EEMUA 191 figures of the last {hours} hours of event time.": "مؤشرات EEMUA 191 لآخر {hours} ساعة من زمن الأحداث.",
    "Language": "اللغة",
    "Acknowledge": "إقرار",
    "Unshelve": "إلغاء التأجيل",
    "History": "السجل",
    "Dashboard": "لوحة المتابعة",
    "customers": "زبون",
    "Acknowledged {n}": "تم الإقرار بـ {n}",
    ", {n} raised since you looked were not": "، ولم يُقَرّ بـ {n} ظهرت بعد اطلاعك",
    "Refused": "مرفوض",
    "Nothing to acknowledge": "لا شيء للإقرار به",
    "Connection lost: reconnecting…": "انقطع الاتصال: إعادة الاتصال…",
    "Shelved {id} until {t}": "تم تأجيل {id} حتى {t}",
    "Unshelved {id}": "أُلغي تأجيل {id}",
    "Command {id} sent: waiting for the gateway's reply": "أُرسل الأمر {id}: في انتظار رد البوابة",
    "{point}: now {current}, set to {value}?": "{point}: الآن {current}، هل تُضبط على {value}؟",
    "waiting": "في الانتظار",
    "Enter a value inside the range": "أدخل قيمة ضمن المجال",
    "shelved until {t}: {reason}": "مؤجّلة حتى {t}: {reason}",
    "{n} consequences": "{n} إنذارات تابعة",
}

TABLES = {"fr": FR, "ar": AR}

JS = (
    "Unacknowledged",
    "Acknowledged",
    "Returned, unacknowledged",
    "Shelved",
    "Suppressed",
    "Out of service",
    "Normal",
    "critical",
    "high",
    "medium",
    "low",
    "Acknowledge",
    "Shelve",
    "Unshelve",
    "History",
    "Dashboard",
    "customers",
    "Acknowledged {n}",
    ", {n} raised since you looked were not",
    "Refused",
    "Nothing to acknowledge",
    "Connection lost: reconnecting…",
    "Shelved {id} until {t}",
    "Unshelved {id}",
    "Command {id} sent: waiting for the gateway's reply",
    "{point}: now {current}, set to {value}?",
    "waiting",
    "Enter a value inside the range",
    "shelved until {t}: {reason}",
)


def tr(text: str, **values: object) -> str:
    """``text`` in the request's language, ``{name}`` filled from ``values``."""
    out = TABLES.get(LANG.get(), {}).get(text, text)
    return out.format(**values) if values else out


def js_words() -> dict[str, str]:
    return {k: tr(k) for k in JS}


def choose(query_lang: str | None, cookie_lang: str | None, accept: str) -> str:
    """The language: the query's, else the cookie's, else the first known of Accept-Language."""
    for lang in (query_lang, cookie_lang):
        if lang in LANGUAGES:
            return lang
    for part in accept.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"
