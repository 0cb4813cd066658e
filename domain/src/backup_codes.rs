//! Backup codes: single-use recovery codes for a lost second-factor device.
//!
//! Each code carries 120 random bits, above the 112 bits from which OWASP ASVS 5.0 §6.5.2
//! allows a fast keyed hash instead of a slow password hash; so a code is stored only as an
//! HMAC under the sealing key and checking one costs microseconds, not an Argon2 run. Codes are
//! written in Crockford's base32 (no I, L, O, U), grouped by four, and read back forgivingly.

use secrecy::{ExposeSecret, SecretString};

use crate::services::Randomness;

/// How many codes a user gets, as in the original service.
pub const DEFAULT_COUNT: usize = 5;
const CODE_BYTES: usize = 15;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// One freshly generated code, in the form shown to the user (`XXXX-XXXX-…`).
pub fn generate(rng: &dyn Randomness) -> SecretString {
    let mut bytes = [0u8; CODE_BYTES];
    rng.fill(&mut bytes);
    let mut symbols = String::with_capacity(29);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let index = ((buffer >> bits) & 0x1f) as usize;
            if !symbols.is_empty() && symbols.len() % 5 == 4 {
                symbols.push('-');
            }
            symbols.push(char::from(ALPHABET[index]));
        }
    }
    SecretString::from(symbols)
}

/// `count` fresh codes.
pub fn generate_set(rng: &dyn Randomness, count: usize) -> Vec<SecretString> {
    (0..count).map(|_| generate(rng)).collect()
}

/// The canonical form a code is digested in: separators and spaces dropped, upper case, and
/// the letters people confuse with digits read as those digits.
pub fn canonical(code: &SecretString) -> SecretString {
    let canonical: String = code
        .expose_secret()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    SecretString::from(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SeqRandomness;

    #[test]
    fn a_code_has_24_symbols_in_six_groups_from_the_crockford_alphabet() {
        let code = generate(&SeqRandomness::starting_at(7));
        let text = code.expose_secret();
        assert_eq!(text.len(), 29);
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), 6);
        assert!(groups.iter().all(|g| g.len() == 4));
        assert!(text
            .chars()
            .filter(|c| *c != '-')
            .all(|c| ALPHABET.contains(&(c as u8))));
    }

    #[test]
    fn codes_are_read_back_whatever_the_case_separators_or_confusable_letters() {
        let typed = SecretString::from("abcd efgh-o1il");
        assert_eq!(canonical(&typed).expose_secret(), "ABCDEFGH0111");
    }

    #[test]
    fn a_set_holds_distinct_codes() {
        let set = generate_set(&SeqRandomness::starting_at(1), DEFAULT_COUNT);
        let mut texts: Vec<&str> = set.iter().map(|c| c.expose_secret()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), DEFAULT_COUNT);
    }
}
