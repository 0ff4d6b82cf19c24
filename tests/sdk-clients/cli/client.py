"""The AWS CLI's default credential chain, as a pod runs `aws`: the session the CLI's own driver
makes (awscli.clidriver, with the CLI's own copy of botocore), with only the variables the webhook
injects. With `--botocore`, the botocore package's chain instead (botocore.session.get_session(),
as boto3 makes it): the project's interpreter runs it with its pinned botocore
(scripts/requirements-test.txt; demo-app/tests/shadowing.rs). Prints one result line without any
secret (the access key id, the expiry, the session token's length, the provider that won, as
`aws configure list` names it), or one error line (with the provider botocore had picked, when it
picked one: assume-role, web identity and SSO fail only when first used), and exits 1."""

import json
import sys


def session():
    if "--botocore" in sys.argv:
        import botocore.session

        return botocore.session.get_session()
    from awscli.clidriver import create_clidriver

    return create_clidriver().session


def main():
    creds = None
    try:
        creds = session().get_credentials()
        if creds is None:
            raise RuntimeError("Unable to locate credentials")
        frozen = creds.get_frozen_credentials()
    except Exception as err:  # the SDK's refusal, whatever its class
        method = getattr(creds, "method", None)
        print("SDK_ERROR " + json.dumps({"name": type(err).__name__, "message": str(err), "method": method}))
        sys.exit(1)
    expiry = getattr(creds, "_expiry_time", None)
    print(
        "SDK_RESULT "
        + json.dumps(
            {
                "access_key_id": frozen.access_key,
                "expiry": int(expiry.timestamp()) if expiry else None,
                "session_token_len": len(frozen.token) if frozen.token else None,
                "method": creds.method,
            }
        )
    )


main()
