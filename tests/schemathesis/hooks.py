"""Schemathesis hooks for the schemathesis test (tests/it/schemathesis.rs).

Every request that takes a bearer token gets a fresh one, from an account made for that
request alone: the stateful phase logs out, ends sessions, changes passwords, turns on a
second factor, locks and erases accounts, and a token shared between requests would die on
the first of these and starve every operation after it.

- An admin-only operation (one that documents the `auth.admin_only` problem) gets the token
  of a fresh account from TWOFOLD_SCHEMATHESIS_ADMINS, a list the service was started with
  as its admin addresses; the list is long enough for the run and the hook fails loudly when
  it runs out.
- `/tfa/login_tfa` and `/tfa/recover_tfa` take a pre-2FA token: the `access_token` of the 202
  login of a fresh account with an email second factor.
- Every other operation gets the access token of a fresh account without a second factor.

Findings that are not the service's fault are dropped by name in `filter_failure` below,
each with its reason; every other failure fails the run.
"""

import itertools
import json
import os
import threading
import uuid

import requests
import schemathesis

BASE_URL = os.environ["TWOFOLD_SCHEMATHESIS_URL"].rstrip("/")
ADMINS = os.environ["TWOFOLD_SCHEMATHESIS_ADMINS"].split(",")
PASSWORD = "schemathesis hook passphrase"
ADMIN_ONLY = "auth.admin_only"

_next_admin = itertools.count()
_lock = threading.Lock()


def _sign_up_and_log_in(email, device):
    body = {
        "email": email,
        "full_name": "Schemathesis",
        "password": PASSWORD,
        "tfa_enabled": device is not None,
        "device": {"device_type": device} if device else None,
    }
    signed_up = requests.post(f"{BASE_URL}/api/v1/auth/signup", json=body, timeout=30)
    if signed_up.status_code != 200:
        raise RuntimeError(f"hook sign-up of {email}: {signed_up.status_code} {signed_up.text}")
    login = requests.post(
        f"{BASE_URL}/api/v1/auth/login",
        data={"username": email, "password": PASSWORD},
        timeout=30,
    )
    expected = 202 if device else 200
    if login.status_code != expected:
        raise RuntimeError(f"hook login of {email}: {login.status_code} {login.text}")
    return login.json()["access_token"]


def _admin_email():
    with _lock:
        index = next(_next_admin)
    if index >= len(ADMINS):
        raise RuntimeError(
            f"the hook used all {len(ADMINS)} admin addresses: start the service with more"
        )
    return ADMINS[index]


def _is_admin_only(operation):
    forbidden = operation.definition.raw.get("responses", {}).get("403", {})
    examples = forbidden.get("content", {}).get("application/problem+json", {}).get("examples", {})
    return ADMIN_ONLY in examples


def _schemes(operation):
    return {name for requirement in operation.definition.raw.get("security", []) for name in requirement}


@schemathesis.auth(refresh_interval=None)
class FreshAccountToken:
    """A token of an account made for this one request (see the module documentation)."""

    def get(self, case, context):
        operation = context.operation
        schemes = _schemes(operation)
        if "pre_2fa_token" in schemes:
            return _sign_up_and_log_in(f"pre2fa-{uuid.uuid4()}@schemathesis.test", "email")
        if "access_token" not in schemes:
            return None
        if _is_admin_only(operation):
            return _sign_up_and_log_in(_admin_email(), None)
        return _sign_up_and_log_in(f"user-{uuid.uuid4()}@schemathesis.test", None)

    def set(self, case, data, context):
        case.headers = dict(case.headers or {})
        case.headers["Authorization"] = f"Bearer {data}"


# Schema-valid requests the service rightly refuses (check ST202, "Schema-valid request
# rejected"), by operation and the problem `code` of the answer. Nothing else is dropped.
SCHEMA_VALID_REFUSALS = {
    # The password policy refuses a common password (a list of thousands, compared in any
    # letter case) and one character repeated: rules a JSON Schema cannot state.
    ("POST /api/v1/auth/signup", "user.password_too_common"),
    ("POST /api/v1/auth/signup", "user.password_too_weak"),
    ("PUT /api/v1/auth/password", "user.password_too_common"),
    ("PUT /api/v1/auth/password", "user.password_too_weak"),
    ("POST /api/v1/auth/reset-password", "user.password_too_common"),
    ("POST /api/v1/auth/reset-password", "user.password_too_weak"),
    # A device is required when `tfa_enabled` is true: a rule between two fields, which the
    # document states in words (utoipa's schema objects have no `if`/`then`).
    ("POST /api/v1/auth/signup", "tfa.device_required"),
    # A reset token is a secret the service emailed; no generated one is valid.
    ("POST /api/v1/auth/reset-password", "auth.reset_token_invalid"),
    # The account's state decides: the hook's fresh accounts have no second factor, and
    # these answer 400 for that, as the original contract says.
    ("GET /api/v1/tfa/get_my_qrcode", "tfa.no_code_generator"),
    ("POST /api/v1/tfa/get_my_qrcode", "tfa.no_code_generator"),
    ("POST /api/v1/tfa/email_code", "tfa.not_enabled"),
    ("POST /api/v1/tfa/backup_codes", "tfa.not_enabled"),
    ("POST /api/v1/tfa/disable_tfa", "tfa.not_enabled"),
    ("PUT /api/v1/tfa/switch_device", "tfa.not_enabled"),
}

SCHEMA_VALID_REJECTED = "ST202"
DELETED_RESOURCE_AVAILABLE = "ST301"

# Reads that rightly answer after `DELETE /users/{user_id}` (check ST301, "Deleted resource
# still available"): erasure keeps the user's events, with what identified the person sealed
# for good, so that the log stays whole; an admin still reads them, and the user as they were
# before the erasure. `GET /users/{user_id}` without `as_of` answers 404.
READS_AFTER_ERASURE = {
    "GET /api/v1/users/{user_id}/events",
    "GET /api/v1/users/{user_id}",
}


def _problem_code(response):
    try:
        return json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        return None


def _has_control_character(text):
    return any(ord(character) < 0x20 or 0x7F <= ord(character) < 0xA0 for character in text)


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps every failure except the service's rightful answers listed here."""
    if failure.code == DELETED_RESOURCE_AVAILABLE:
        operation = failure.operation
        if operation == "GET /api/v1/users/{user_id}" and (case.query or {}).get("as_of") is None:
            return True
        return operation not in READS_AFTER_ERASURE
    if failure.code != SCHEMA_VALID_REJECTED:
        return True
    operation = failure.operation
    code = _problem_code(response)
    if (operation, code) in SCHEMA_VALID_REFUSALS:
        return False
    # A history cursor is opaque: only one the service gave is valid, which a schema cannot
    # say of a string.
    if operation == "GET /api/v1/users/me/history" and code == "request.invalid_query":
        if (case.query or {}).get("cursor") is not None:
            return False
    # Schemathesis puts extra form fields' names into multipart part headers as they are; a
    # control character is not allowed in a header, so the body is malformed (400).
    if operation == "POST /api/v1/auth/login" and code == "request.invalid_form":
        if isinstance(case.body, dict) and any(_has_control_character(name) for name in case.body):
            return False
    return True
