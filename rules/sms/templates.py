"""Customer SMS texts in French, Arabic and English, chosen by the customer's language.

Each template names its fields; :func:`render` fills them. Numbers are given already
formatted by the sink (dates in the field's time zone).
"""

from __future__ import annotations

from typing import Literal

Lang = Literal["fr", "ar", "en"]
Kind = Literal["over_consumption", "continuous_flow", "outage", "restoration"]

TEMPLATES: dict[str, dict[str, str]] = {
    "over_consumption": {
        "en": "{utility}: your water consumption from {start} to {end} is {pct} % above {basis} "
              "({this} L/day vs {ref} L/day). Please check your installation for leaks.",
        "fr": "{utility} : votre consommation d'eau du {start} au {end} est supérieure de {pct} % à "
              "{basis} ({this} L/jour contre {ref} L/jour). Vérifiez votre installation : il peut "
              "s'agir d'une fuite.",
        "ar": "{utility}: استهلاككم للماء من {start} إلى {end} أعلى بنسبة {pct}٪ من {basis} "
              "({this} لتر/يوم مقابل {ref} لتر/يوم). يرجى فحص تجهيزاتكم للتأكد من عدم وجود تسرب.",
    },
    "continuous_flow": {
        "en": "{utility}: your water meter has recorded a continuous flow for {hours} hours (at least "
              "{rate} L per hour). This often means a leak: please check taps, toilets and pipes.",
        "fr": "{utility} : votre compteur d'eau enregistre un débit continu depuis {hours} heures (au "
              "moins {rate} L par heure). C'est souvent une fuite : vérifiez robinets, chasses d'eau et "
              "canalisations.",
        "ar": "{utility}: سجل عداد الماء الخاص بكم تدفقا مستمرا منذ {hours} ساعة (على الأقل {rate} لتر "
              "في الساعة). قد يدل ذلك على تسرب: يرجى فحص الصنابير والمراحيض والأنابيب.",
    },
    "outage": {
        "en": "{utility}: a power outage has affected your area since {time}. Our teams are working on "
              "it; we will tell you when power is back.",
        "fr": "{utility} : une coupure d'électricité touche votre secteur depuis {time}. Nos équipes "
              "interviennent ; nous vous préviendrons du retour du courant.",
        "ar": "{utility}: انقطاع في التيار الكهربائي يمس منطقتكم منذ {time}. فرقنا تعمل على إصلاحه "
              "وسنخبركم عند عودة التيار.",
    },
    "restoration": {
        "en": "{utility}: power is back in your area since {time} (interruption of {minutes} min). "
              "Thank you for your patience.",
        "fr": "{utility} : le courant est rétabli dans votre secteur depuis {time} (coupure de {minutes} "
              "min). Merci de votre patience.",
        "ar": "{utility}: عاد التيار الكهربائي إلى منطقتكم منذ {time} (انقطاع لمدة {minutes} دقيقة). "
              "شكرا على صبركم.",
    },
}

BASIS: dict[str, dict[str, str]] = {
    "same_period_last_year": {"en": "the same period last year", "fr": "la même période l'an dernier",
                              "ar": "نفس الفترة من السنة الماضية"},
    "recent_weeks": {"en": "your previous weeks", "fr": "vos semaines précédentes",
                     "ar": "الأسابيع السابقة"},
}


def render(kind: str, lang: str, **fields: object) -> str:
    """The text of ``kind`` in ``lang`` (English when the language has no template)."""
    by_lang = TEMPLATES[kind]
    return by_lang.get(lang, by_lang["en"]).format(**fields)
