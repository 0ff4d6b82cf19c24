// The AWS SDK for Go v2's default credential chain, as a pod runs it: config.LoadDefaultConfig,
// then cfg.Credentials.Retrieve, with only the variables the webhook injects. Prints one result
// line without any secret (the access key id, the expiry, the session token's length), or one
// error line, and exits 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/config"
)

func main() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		fail(err)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		fail(err)
	}
	var expiry *int64
	if creds.CanExpire {
		secs := creds.Expires.Unix()
		expiry = &secs
	}
	var account *string
	if creds.AccountID != "" {
		account = &creds.AccountID
	}
	line, _ := json.Marshal(map[string]any{
		"access_key_id":     creds.AccessKeyID,
		"account_id":        account,
		"expiry":            expiry,
		"session_token_len": len(creds.SessionToken),
	})
	fmt.Println("SDK_RESULT " + string(line))
}

func fail(err error) {
	line, _ := json.Marshal(map[string]string{"message": err.Error()})
	fmt.Println("SDK_ERROR " + string(line))
	os.Exit(1)
}
