// The AWS SDK for JavaScript v3's default credential chain, as a pod runs it: fromNodeProviderChain
// with only the variables the webhook injects. Prints one result line without any secret (the
// access key id, the expiry, the session token's length), or one error line, and exits 1.
"use strict";
const { fromNodeProviderChain } = require("@aws-sdk/credential-providers");

fromNodeProviderChain()().then(
  (creds) => {
    console.log(
      "SDK_RESULT " +
        JSON.stringify({
          access_key_id: creds.accessKeyId,
          account_id: creds.accountId ?? null,
          expiry: creds.expiration ? Math.floor(creds.expiration.getTime() / 1000) : null,
          session_token_len: creds.sessionToken ? creds.sessionToken.length : null,
        }),
    );
  },
  (err) => {
    console.log("SDK_ERROR " + JSON.stringify({ name: err.name, message: err.message }));
    process.exit(1);
  },
);
