"""schemathesis hooks for scripts/sweep (docs/SWEEP.md).

One rule of the API depends on what the event log holds, so no schema can
state it: a `min_position` token past the end of the log names no write (no
answer ever carried one), and ordo refuses it with 400 `bad_request` rather
than waiting for a write that will never come. Such a token is schema-valid, so
the built-in `positive_data_acceptance` check would call that 400 a mismatch;
this check is the built-in one with exactly that exception.
"""

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

# The `detail` of that 400 (api/src/reads.rs).
PAST_THE_END = "is past the end of the event log"


@schemathesis.check
def positive_data_acceptance_save_tokens_past_the_log(ctx, response, case):
    """Schema-valid requests are accepted, save for min_position tokens past the log."""
    if response.status_code == 400:
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if (
            isinstance(problem, dict)
            and problem.get("code") == "bad_request"
            and PAST_THE_END in str(problem.get("detail", ""))
        ):
            return None
    return positive_data_acceptance(ctx, response, case)
