"""Classifying a reply without an LLM: only what headers and phrases can tell.

In this order, over the new text (and the subject, for absence notices):
- a person (no automatic headers) asking to be removed, in English, French, German or Spanish:
  `unsubscribe`;
- an absence notice: `out_of_office`, with the return date found in the text (dates in words or
  digits, in the notice's language, read by `dateparser`);
- automatic headers (RFC 3834 Auto-Submitted, X-Autoreply, Precedence…) or an auto-reply
  phrase: `auto_reply`;
- anything else: `other`, confidence 0, left for a person (it stops the lead, as any reply did).
"""

import re
import unicodedata
from datetime import date, datetime, time

from dateparser.search import search_dates

from core.replies.intent import (
    Classification,
    ClassificationMethod,
    Intent,
    ReplyIntent,
    usable_return_date,
)
from core.replies.reply_text import LANGUAGES, ReplyContent

# How sure a matched phrase makes the rules: above the default threshold (0.6), so an absence
# notice reschedules and an unsubscribe request unsubscribes; `other` says nothing was decided.
PHRASE_CONFIDENCE = 0.9
HEADER_CONFIDENCE = 0.95
# An absence notice gives its return date up front; dateparser's search costs about 0.1 s per
# 1,000 characters of text dense with dates, so it reads no further.
_DATE_SEARCH_CHARS = 1_000


def _table(phrases: dict[str, list[str]]) -> dict[str, re.Pattern[str]]:
    return {language: re.compile("|".join(found)) for language, found in phrases.items()}


_UNSUBSCRIBE = _table(
    {
        "en": [
            r"\bunsubscribe",
            r"\bremove me\b",
            r"\btake me off\b",
            r"\bopt(?:-| )?out\b",
            r"\bstop (?:e-?mailing|contacting|sending|writing)",
            r"\b(?:do not|don't|dont) (?:e-?mail|contact|write to) me",
            r"\bno (?:more|further) e-?mails",
            r"\bdelete my (?:data|details|information)",
        ],
        "fr": [
            r"désabonn",
            r"désinscri",
            r"\b(?:retirez|supprimez|enlevez)[- ]moi",
            r"\bne (?:plus )?me (?:contactez|contacter|écrivez|écrire) plus",
            r"\bne m'écrivez plus",
            r"\barrêtez de (?:m'écrire|me contacter|m'envoyer)",
            r"\bne (?:plus|pas) (?:me )?(?:contacter|recevoir)",
            r"\bsupprime[rz] mes données",
        ],
        "de": [
            r"\babmelden",
            r"\baustragen",
            r"\baus (?:ihrem|ihrer|dem|der) (?:verteiler|liste|mailingliste|e-?mail-?liste)",
            r"\bkeine (?:weiteren )?(?:e-?mails|nachrichten|mails) mehr",
            r"\bnicht mehr (?:kontaktieren|anschreiben|anzuschreiben|schreiben)",
            r"\blöschen sie meine daten",
        ],
        "es": [
            r"\bdar(?:me)? de baja",
            r"\bden(?:me)? de baja",
            r"\beliminarme\b",
            r"\bquit(?:en|arme|adme)\b",
            r"\bno (?:me )?(?:vuelva[ns]? a )?(?:escrib|contact)",
            r"\bno quiero recibir",
            r"\bborr(?:en|ar) mis datos",
        ],
    }
)
_OUT_OF_OFFICE = _table(
    {
        "en": [
            r"\bout of (?:the )?office\b",
            r"\bon (?:annual |parental |maternity |paternity |sick )?leave\b",
            r"\bon (?:vacation|holidays?)\b",
            r"\baway from (?:the office|my desk|e-?mail)",
            r"\b(?:i am|i'm|i will be|i'll be) (?:currently )?(?:away|travell?ing|off)\b",
            r"\b(?:will|i'll) be back\b",
            r"\blimited access to (?:my )?e-?mail",
        ],
        "fr": [
            r"\babsente? (?:du bureau|jusqu)",
            r"\bhors du bureau",
            r"\ben (?:congés?|vacances)\b",
            r"\bde retour (?:le|au bureau|à partir)",
            r"\baccès limité (?:à|a) (?:mes|ma) (?:e-?mails?|messagerie)",
        ],
        "de": [
            r"\bnicht im (?:büro|hause)",
            r"\bau(?:ß|ss)er (?:haus|dem büro)",
            r"\babwesend",
            r"\bim urlaub\b",
            r"\babwesenheitsnotiz",
            r"\bwieder (?:im büro|erreichbar|da)\b",
        ],
        "es": [
            r"\bfuera de la oficina",
            r"\bde vacaciones\b",
            r"\bausente\b",
            r"\bestar[ée] de (?:vuelta|regreso)",
            r"\bvolver[ée] (?:a la oficina|el)\b",
            r"\bbaja médica\b",
        ],
    }
)
# The subjects responders use by default, after any "Re:" or "Automatic reply:" prefix.
_OUT_OF_OFFICE_SUBJECT = re.compile(
    r"out of (?:the )?office|abwesen|absen(?:t|ce)|fuera de la oficina|ausente|vacation|urlaub"
)
_AUTO_REPLY = re.compile(
    r"automatic reply|auto[- ]?reply|auto[- ]?response|automated (?:response|message|reply)"
    r"|do not reply to this|we have received your (?:e-?mail|message|request)"
    r"|réponse automatique|message automatique|nous avons bien reçu votre"
    r"|automatische antwort|automatisch generiert|wir haben ihre (?:e-?mail|nachricht|anfrage)"
    r"|respuesta automática|mensaje automático|hemos recibido su"
)


def classify_by_rules(reply: ReplyContent | None, *, received: date) -> Classification:
    """What headers and phrases say of a reply received on `received`; rules-based."""
    if reply is None or not (reply.text or reply.subject):
        return _rules(Intent.other, 0.0, "No text to classify; left for a person.")
    text = _normalised(reply.text)
    subject = _normalised(reply.subject)
    asked_out = _language(_UNSUBSCRIBE, text)
    if asked_out is not None and not reply.automatic:
        return _rules(Intent.unsubscribe, PHRASE_CONFIDENCE, "Asks to be removed from the list.")
    absent = _language(_OUT_OF_OFFICE, text)
    if absent is not None or _OUT_OF_OFFICE_SUBJECT.search(subject):
        back = find_return_date(reply.text, received=received, language=absent)
        summary = f"Out of office until {back.isoformat()}." if back else "Out of office."
        return _rules(Intent.out_of_office, PHRASE_CONFIDENCE, summary, return_date=back)
    if reply.automatic:
        return _rules(Intent.auto_reply, HEADER_CONFIDENCE, "Automatic reply.")
    if _AUTO_REPLY.search(text) or _AUTO_REPLY.search(subject):
        return _rules(Intent.auto_reply, PHRASE_CONFIDENCE, "Automatic reply.")
    return _rules(Intent.other, 0.0, "A reply no rule recognises; left for a person.")


def find_return_date(text: str, *, received: date, language: str | None) -> date | None:
    """The first date in `text` after `received` and within a year, read in `language` (all
    four when None); None when there is none.

    The first, not the last: a notice sent during an absence "from 1 to 10 December" has its
    start behind it, and a day without a year behind the reply is read as next year's, so the
    earliest date still ahead is the end of the absence. Dates with a day of the month come
    first; without one, a weekday alone ("back on Monday") counts when it falls within the week
    after the reply, and a month or a year alone ("until December") is no return date.
    """
    settings = {
        "RELATIVE_BASE": datetime.combine(received, time()),
        "PREFER_DATES_FROM": "future",
        "DATE_ORDER": "MDY" if language == "en" else "DMY",
    }
    languages = [language] if language else list(LANGUAGES)
    text = text[:_DATE_SEARCH_CHARS]
    with_day = settings | {"REQUIRE_PARTS": ["day"]}
    found = search_dates(text, languages=languages, settings=with_day) or []
    usable = [usable_return_date(parsed.date(), received=received) for _, parsed in found]
    if not any(usable):
        weekdays = search_dates(text, languages=languages, settings=settings) or []
        usable = [
            parsed.date() for _, parsed in weekdays if 0 < (parsed.date() - received).days <= 7
        ]
    days = [day for day in usable if day is not None]
    return min(days) if days else None


def _rules(
    intent: Intent, confidence: float, summary: str, *, return_date: date | None = None
) -> Classification:
    return Classification(
        intent=ReplyIntent(
            intent=intent, confidence=confidence, return_date=return_date, summary=summary
        ),
        method=ClassificationMethod.rules,
    )


def _language(table: dict[str, re.Pattern[str]], text: str) -> str | None:
    """The first language whose phrases occur in `text`."""
    return next((language for language, found in table.items() if found.search(text)), None)


def _normalised(text: str) -> str:
    # Mail clients write typographic apostrophes and non-breaking spaces, in NFC or NFD.
    plain = unicodedata.normalize("NFKC", text).replace("\u2019", "'").lower()
    return " ".join(plain.split())
