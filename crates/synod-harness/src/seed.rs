//! Seeds of test runs: `SYNOD_TEST_SEED` replays one, else a fixed default keeps
//! `cargo test` deterministic in what it plans.

/// The environment variable that sets a run's seed.
pub const SEED_VARIABLE: &str = "SYNOD_TEST_SEED";

/// The seed from `SYNOD_TEST_SEED` (decimal, or hexadecimal with `0x`), or
/// `default` if it is unset or unreadable.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var(SEED_VARIABLE)
        .ok()
        .and_then(|text| parse_seed(&text))
        .unwrap_or(default)
}

/// A seed written in decimal, or in hexadecimal with `0x`.
pub fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The command that replays one test of the `synod` crate with `seed`.
pub fn replay_test_command(test_file: &str, test_name: &str, seed: u64) -> String {
    format!(
        "{SEED_VARIABLE}={seed} cargo nextest run -p synod --test {test_file} -E 'test({test_name})'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2a "), Some(42));
        assert_eq!(parse_seed("forty-two"), None);
    }
}
