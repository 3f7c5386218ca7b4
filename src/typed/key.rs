//! The record key's hash: stable across runs and versions, since it is stored.

/// A 64-bit hash of a record's key, stable across runs and versions (it is stored): FNV-1a over
/// each value's type tag, length and bytes, then a final avalanche (murmur3's fmix64).
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl KeyHasher {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn text(&mut self, s: &str) {
        self.bytes(&[1]);
        self.bytes(&(s.len() as u64).to_le_bytes());
        self.bytes(s.as_bytes());
    }

    pub fn int(&mut self, v: i64) {
        self.bytes(&[2]);
        self.bytes(&v.to_le_bytes());
    }

    pub fn real(&mut self, v: f64) {
        self.bytes(&[3]);
        // -0.0 and 0.0 are the same key.
        let v = if v == 0.0 { 0.0 } else { v };
        self.bytes(&v.to_bits().to_le_bytes());
    }

    pub fn finish(self) -> i64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h as i64
    }
}
