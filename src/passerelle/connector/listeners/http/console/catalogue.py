"""Every string the console shows, in French (the default) and English: one catalogue, one place.

Templates call ``t("key")``; a key missing from the catalogue is an error (``KeyError``), never a silent
fallback, and a test checks that every key a template uses is here in both languages. ``t(key, default)``
is for open-ended values (an event kind the catalogue does not know yet is shown as it is).
"""

from __future__ import annotations

from collections.abc import Callable

DEFAULT_LANGUAGE = "fr"
LANGUAGES = ("fr", "en")

#: key → (French, English)
CATALOGUE: dict[str, tuple[str, str]] = {
    # navigation and frame
    "nav.skip": ("Aller au contenu", "Skip to content"),
    "nav.label": ("Navigation principale", "Main navigation"),
    "nav.language": ("Langue", "Language"),
    "nav.overview": ("Vue d'ensemble", "Overview"),
    "nav.messages": ("Messages", "Messages"),
    "nav.dead_letters": ("Rejets et attentes", "Dead letters and parked"),
    "nav.audit": ("Journal d'audit", "Audit trail"),
    "nav.logout": ("Se déconnecter", "Log out"),
    "role.read": ("lecture", "read"),
    "role.operate": ("exploitation", "operate"),
    "role.intake": ("dépôt", "intake"),
    # login
    "login.title": ("Connexion", "Log in"),
    "login.token": ("Jeton d'accès", "Access token"),
    "login.help": (
        "Collez le jeton qui vous a été remis (rôle lecture ou exploitation). Il n'est jamais enregistré "
        "dans le navigateur : une session est ouverte à sa place.",
        "Paste the token you were given (read or operate role). It is never stored in the browser: a "
        "session is opened instead.",
    ),
    "login.submit": ("Se connecter", "Log in"),
    "login.certificate": ("Continuer avec le certificat", "Continue with the certificate"),
    "login.refused": ("Jeton inconnu.", "Unknown token."),
    "login.intake": (
        "Ce jeton sert au dépôt de documents, pas à la console.",
        "This token is for posting documents, not for the console.",
    ),
    # errors
    "error.title": ("Erreur", "Error"),
    "error.role": ("Votre rôle ne permet pas cette action.", "Your role does not allow this."),
    "error.csrf": (
        "Formulaire expiré ou invalide : rechargez la page et recommencez.",
        "Expired or invalid form: reload the page and try again.",
    ),
    "error.too_large": ("Formulaire trop volumineux.", "Form too large."),
    "error.no_message": ("Aucun message avec ce numéro.", "No message with this number."),
    "error.no_document": ("Ce message ne produit aucun document.", "This message makes no document."),
    "error.purged": (
        "Le contenu de ce message a été purgé (durée de conservation dépassée).",
        "This message's content was purged (retention period over).",
    ),
    # overview
    "overview.title": ("Vue d'ensemble", "Overview"),
    "overview.status": ("État", "Status"),
    "overview.readiness": ("Passerelle", "Gateway"),
    "overview.ready": ("prête", "ready"),
    "overview.not_ready": ("pas prête", "not ready"),
    "overview.space": ("Espace patient", "Patient space"),
    "overview.oldest": ("Plus ancien message en attente", "Oldest pending message"),
    "overview.none_pending": ("aucun", "none"),
    "overview.rates": ("Débits", "Rates"),
    "overview.rates_caption": ("Messages reçus et documents remis", "Messages received and documents delivered"),
    "overview.period": ("Période", "Period"),
    "overview.received": ("Reçus", "Received"),
    "overview.delivered": ("Remis", "Delivered"),
    "overview.last_hour": ("Dernière heure", "Last hour"),
    "overview.last_day": ("Dernières 24 heures", "Last 24 hours"),
    "overview.counts": ("Messages par état", "Messages by state"),
    "overview.counts_caption": ("Tout le journal", "The whole journal"),
    "overview.count": ("Nombre", "Count"),
    "overview.certificates": ("Certificats", "Certificates"),
    "overview.certificates_caption": (
        "Certificats configurés et leur fin de validité",
        "Configured certificates and when they expire",
    ),
    "overview.setting": ("Paramètre", "Setting"),
    "overview.subject": ("Sujet", "Subject"),
    "overview.expires": ("Expire le", "Expires"),
    "overview.days_left": ("Jours restants", "Days left"),
    "overview.no_certificates": ("Aucun certificat configuré.", "No certificate configured."),
    # states
    "state.accepted": ("accepté", "accepted"),
    "state.rejected": ("rejeté à la réception", "rejected"),
    "state.delivered": ("remis", "delivered"),
    "state.retry": ("nouvel essai prévu", "retry"),
    "state.parked": ("en attente", "parked"),
    "state.refused": ("refusé", "refused"),
    "state.dead": ("en échec", "dead"),
    # message fields
    "field.id": ("N°", "No."),
    "field.received_at": ("Reçu le", "Received"),
    "field.channel": ("Canal", "Channel"),
    "field.sender": ("Émetteur", "Sender"),
    "field.kind": ("Type", "Kind"),
    "field.message_id": ("Identifiant du message", "Message id"),
    "field.state": ("État", "State"),
    "field.detail": ("Détail", "Detail"),
    "field.attempts": ("Tentatives", "Attempts"),
    "field.next_due": ("Prochain essai", "Next attempt"),
    "field.deadline": ("Échéance", "Deadline"),
    "field.document_id": ("Identifiant du document", "Document id"),
    "field.patient": ("INS du patient", "Patient INS"),
    "field.size": ("Taille (octets)", "Size (bytes)"),
    # lists
    "list.empty": ("Aucun message.", "No message."),
    "list.pages": ("Pages", "Pages"),
    "list.newest": ("Les plus récents", "Newest"),
    "list.newer": ("Plus récents", "Newer"),
    "list.older": ("Plus anciens", "Older"),
    "list.select": ("Sélection", "Selection"),
    "list.select_one": ("Sélectionner le message", "Select message"),
    "list.select_all": ("Tout sélectionner", "Select all"),
    "messages.title": ("Messages", "Messages"),
    "messages.filters": ("Filtres", "Filters"),
    "messages.any": ("tous", "any"),
    "messages.patient_filter": ("INS du patient", "Patient INS"),
    "messages.since": ("Reçus à partir du", "Received from"),
    "messages.until": ("Reçus jusqu'au", "Received until"),
    "messages.apply": ("Filtrer", "Filter"),
    "messages.reset": ("Effacer les filtres", "Clear filters"),
    "messages.caption": ("Messages du journal, du plus récent au plus ancien", "Journal messages, newest first"),
    # one message
    "message.title": ("Message", "Message"),
    "message.reveal": ("Afficher l'INS (action tracée)", "Show the INS (audited)"),
    "message.revealed": ("affichage tracé dans le journal d'audit", "this view is in the audit trail"),
    "message.purged": (
        "Contenu purgé : seuls la taille et l'empreinte restent.",
        "Content purged: only its size and digest remain.",
    ),
    "message.truncated": (
        "Message rejeté : seuls ses premiers 64 Kio sont conservés.",
        "Rejected message: only its first 64 KiB are kept.",
    ),
    "message.journey": ("Parcours", "Journey"),
    "message.journey_caption": ("Événements dans l'ordre où ils ont eu lieu", "Events in the order they happened"),
    "message.downloads": ("Téléchargements", "Downloads"),
    "message.downloads_help": (
        "Chaque téléchargement est tracé dans le journal d'audit. Le document est produit à nouveau à partir "
        "du message, par la transformation actuelle.",
        "Every download is recorded in the audit trail. The document is made again from the message by "
        "today's mapping.",
    ),
    "message.raw": ("Message reçu (brut)", "Message as received (raw)"),
    "message.document": ("Document produit", "Generated document"),
    "message.metadata": ("Métadonnées du document (JSON)", "Document metadata (JSON)"),
    # journey events
    "event.at": ("Date", "Time"),
    "event.kind": ("Étape", "Step"),
    "event.detail": ("Détail", "Detail"),
    "event.data": ("Données", "Data"),
    "event.received": ("reçu", "received"),
    "event.ack": ("accusé de réception envoyé", "acknowledgement sent"),
    "event.rejected": ("rejeté", "rejected"),
    "event.mapped": ("document produit", "document made"),
    "event.consent": ("décision de consentement", "consent decision"),
    "event.attempt": ("tentative d'envoi", "delivery attempt"),
    "event.retry": ("nouvel essai prévu", "retry scheduled"),
    "event.delivered": ("remis à l'espace", "delivered to the space"),
    "event.parked": ("mis en attente", "parked"),
    "event.refused": ("refusé", "refused"),
    "event.dead": ("en échec (délai dépassé)", "dead (deadline passed)"),
    "event.replay": ("relancé", "replayed"),
    "event.zam": ("accusé métier (ZAM)", "business acknowledgement (ZAM)"),
    "event.handled": ("traité", "handled"),
    # dead letters and replay
    "dead.title": ("Rejets et attentes", "Dead letters and parked messages"),
    "dead.states": ("États", "States"),
    "dead.help": (
        "Un message relancé repart dans sa file ; l'espace reconnaît un document déjà reçu, la relance ne "
        "crée jamais de doublon.",
        "A replayed message goes back into its lane; the space recognises a document it already has, so "
        "a replay never creates a duplicate.",
    ),
    "dead.caption_dead": ("Messages en échec", "Dead letters"),
    "dead.caption_parked": ("Messages en attente", "Parked messages"),
    "dead.caption_refused": ("Messages refusés", "Refused messages"),
    "dead.operate_needed": ("La relance demande le rôle exploitation.", "Replaying needs the operate role."),
    "replay.preview": ("Prévisualiser la relance", "Preview the replay"),
    "replay.preview_one": ("Relancer ce message…", "Replay this message…"),
    "replay.preview_title": ("Relance : prévisualisation", "Replay: preview"),
    "replay.done_title": ("Relance effectuée", "Replay done"),
    "replay.count_preview": ("Messages qui seraient relancés :", "Messages that would be replayed:"),
    "replay.count_done": ("Messages relancés :", "Messages replayed:"),
    "replay.caption": ("Messages sélectionnés", "Selected messages"),
    "replay.result": ("Résultat", "Result"),
    "replay.would_send": ("Ce qui serait envoyé", "What would be sent"),
    "replay.would_replay": ("serait relancé", "would replay"),
    "replay.replayed": ("relancé", "replayed"),
    "replay.not_replayable": ("ne peut être relancé", "not replayable"),
    "replay.not_found": ("introuvable", "not found"),
    "replay.confirm": ("Je confirme la relance de ces messages", "I confirm replaying these messages"),
    "replay.submit": ("Relancer", "Replay"),
    "replay.cancel": ("Annuler", "Cancel"),
    "replay.selection": ("Sélectionnez entre 1 et 200 messages.", "Select between 1 and 200 messages."),
    "replay.unconfirmed": ("La relance n'a pas été confirmée.", "The replay was not confirmed."),
    # audit
    "audit.title": ("Journal d'audit", "Audit trail"),
    "audit.filters": ("Filtres du journal d'audit", "Audit trail filters"),
    "audit.since": ("À partir du", "From"),
    "audit.action": ("Action", "Action"),
    "audit.outcome": ("Issue", "Outcome"),
    "audit.reason": ("Motif", "Reason"),
    "audit.actor": ("Acteur", "Actor"),
    "audit.caption": ("Enregistrements d'audit, dans l'ordre", "Audit records, in order"),
}

_MISSING = object()


def translator(lang: str) -> Callable[..., str]:
    """``t(key)`` in ``lang``; ``t(key, default)`` gives ``default`` for a key the catalogue lacks."""
    index = LANGUAGES.index(lang) if lang in LANGUAGES else 0

    def t(key: str, default: object = _MISSING) -> str:
        entry = CATALOGUE.get(key)
        if entry is None:
            if default is _MISSING:
                raise KeyError(f"console catalogue: no string {key!r}")
            return str(default)
        return entry[index]

    return t
