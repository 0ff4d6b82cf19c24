//! Text forms of identifiers: lowercase hex, and UUIDs as Kubernetes and AWS print them. Pure
//! formatting; the caller brings the bytes (and the randomness).

/// Append `bytes` as lowercase hex (without a `format!` per byte).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// The version-4 UUID made of `random`: its version and variant bits set, in the usual
/// `8-4-4-4-12` text form.
pub fn uuid_v4(mut random: [u8; 16]) -> String {
    random[6] = (random[6] & 0x0f) | 0x40;
    random[8] = (random[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, group) in [
        &random[..4],
        &random[4..6],
        &random[6..8],
        &random[8..10],
        &random[10..],
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.push('-');
        }
        push_hex(&mut out, group);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        let mut out = String::new();
        push_hex(&mut out, &[0x00, 0x0f, 0xa0, 0xff, 0x7e]);
        assert_eq!(out, "000fa0ff7e");
        let all: Vec<u8> = (0..=255).collect();
        let mut out = String::new();
        push_hex(&mut out, &all);
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn uuids_carry_version_4_and_the_rfc_variant() {
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
        assert_eq!(uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }
}
