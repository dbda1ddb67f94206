//! Key names and values, made without formatting machinery on the hot path.
//!
//! Keys are the prefix followed by a zero-padded decimal index, so every key of a
//! key space has the same length (as in etcd's benchmark) and a key is built by
//! writing digits into a buffer sized once.

use rand::Rng;

/// The keys `prefix + 000..0` to `prefix + (size - 1)`.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: Vec<u8>,
    size: u64,
    width: usize,
}

impl KeySpace {
    /// A key space of `size` keys (at least one) under `prefix`.
    pub fn new(prefix: &str, size: u64) -> KeySpace {
        let size = size.max(1);
        KeySpace {
            prefix: prefix.as_bytes().to_vec(),
            size,
            width: digits(size - 1),
        }
    }

    /// How many keys there are.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Key number `index` (wrapping at the size).
    pub fn key(&self, index: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + self.width);
        key.extend_from_slice(&self.prefix);
        let mut digits_reversed = [0u8; 20];
        let mut rest = index % self.size;
        for slot in digits_reversed.iter_mut().take(self.width) {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        key.extend(digits_reversed[..self.width].iter().rev());
        key
    }

    /// A key index drawn uniformly from the space.
    pub fn random_index(&self, rng: &mut impl Rng) -> u64 {
        rng.random_range(0..self.size)
    }
}

/// Decimal digits needed to write `number`.
fn digits(number: u64) -> usize {
    let mut count = 1;
    let mut rest = number / 10;
    while rest > 0 {
        count += 1;
        rest /= 10;
    }
    count
}

/// A value of `size` random letters and digits, generated once per client so that
/// writes carry incompressible but printable data.
pub fn random_value(size: usize, rng: &mut impl Rng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..size)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_to_one_width() {
        let space = KeySpace::new("k/", 1000);
        assert_eq!(space.key(0), b"k/000".to_vec());
        assert_eq!(space.key(42), b"k/042".to_vec());
        assert_eq!(space.key(999), b"k/999".to_vec());
        assert_eq!(space.key(1000), b"k/000".to_vec(), "indexes wrap");
        assert_eq!(KeySpace::new("", 1).key(7), b"0".to_vec());
        assert_eq!(KeySpace::new("", 11).key(10), b"10".to_vec());
        assert_eq!(
            KeySpace::new("", u64::MAX).key(u64::MAX - 1),
            (u64::MAX - 1).to_string().into_bytes()
        );
    }

    #[test]
    fn random_values_have_the_size_asked() {
        let mut rng = rand::rng();
        let value = random_value(256, &mut rng);
        assert_eq!(value.len(), 256);
        assert!(value.iter().all(u8::is_ascii_alphanumeric));
    }
}
