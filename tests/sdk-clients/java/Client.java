// The AWS SDK for Java v2's default credential chain, as a pod runs it: DefaultCredentialsProvider
// with only the variables the webhook injects. Prints one result line without any secret (the
// access key id, the expiry, the session token's length), or one error line, and exits 1.

import software.amazon.awssdk.auth.credentials.AwsCredentials;
import software.amazon.awssdk.auth.credentials.AwsSessionCredentials;
import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;

public final class Client {
    public static void main(String[] args) {
        AwsCredentials creds;
        try (DefaultCredentialsProvider provider = DefaultCredentialsProvider.builder().build()) {
            creds = provider.resolveCredentials();
        } catch (RuntimeException e) {
            System.out.println("SDK_ERROR {\"name\":" + quote(e.getClass().getName())
                    + ",\"message\":" + quote(String.valueOf(e.getMessage())) + "}");
            System.exit(1);
            return;
        }
        String expiry = creds.expirationTime().map(t -> Long.toString(t.getEpochSecond())).orElse("null");
        String account = creds.accountId().map(Client::quote).orElse("null");
        String tokenLen = creds instanceof AwsSessionCredentials s
                ? Integer.toString(s.sessionToken().length()) : "null";
        System.out.println("SDK_RESULT {\"access_key_id\":" + quote(creds.accessKeyId())
                + ",\"account_id\":" + account + ",\"expiry\":" + expiry
                + ",\"session_token_len\":" + tokenLen + "}");
    }

    /** A JSON string literal. */
    private static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }
}
