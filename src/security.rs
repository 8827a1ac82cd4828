//! Secrets: random tokens (stored only as SHA-256), keyed hashes of national
//! IDs, staff password hashes, signatures, and the per-client rate limit.

use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use standby_store::NidKey;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// 256 random bits, URL-safe base64 (43 characters): for secrets that are
/// never looked up in an index (CSRF values, generated passwords, keys).
pub fn random_secret() -> String {
    use base64::Engine;
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Milliseconds since the epoch from the system clock, for ordering only.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Length of the time-ordered bearer tokens: 12 hex digits of creation time,
/// then 192 random bits in URL-safe base64.
pub const TOKEN_LEN: usize = 44;

/// A new bearer token (confirmation, self-service, invitation, staff
/// session). It starts with its creation time so that what the store keeps of
/// it ([`token_hash`]) is inserted at the end of its index instead of at a
/// random place: at launch-day rates, random keys cost one rewritten index
/// page per sign-up. The time is no secret (the row records it anyway); the
/// 192 random bits are.
pub fn random_token() -> String {
    use base64::Engine;
    let mut buf = [0u8; 24];
    rand::rng().fill_bytes(&mut buf);
    let mut token = String::with_capacity(TOKEN_LEN);
    push_hex(&mut token, wall_ms(), 12);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(buf, &mut token);
    token
}

/// Appends the low `digits` hex digits of `value`, lowercase, zero-padded
/// (as `{:0digits$x}` for a value that fits; higher digits are dropped).
/// Every sign-up makes three identifiers from these: cheaper than `format!`.
fn push_hex(out: &mut String, value: u64, digits: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        let nibble = (value >> (4 * i)) & 0xf;
        out.push(DIGITS[nibble as usize] as char);
    }
}

/// A reference for messages: the prefix, then 32 hex digits (creation time,
/// a counter, 64 random bits), so references too are inserted in order.
pub fn random_reference(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let seq = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut reference = String::with_capacity(prefix.len() + 33);
    reference.push_str(prefix);
    reference.push('-');
    push_hex(&mut reference, wall_ms(), 12);
    push_hex(&mut reference, u64::from(seq), 4);
    push_hex(&mut reference, rand::rng().next_u64(), 16);
    reference
}

/// Bytes of a digest the store keeps: 128 bits, as 32 hex digits. Enough to
/// tell tokens and national IDs apart (a collision among a billion keys has
/// odds near 10^-21) and to resist a search for a matching token (2^128),
/// at half the index of the whole digest: at launch-day rates every sign-up
/// inserts these keys, and the national ID's at a random place.
pub const KEY_BYTES: usize = 16;

/// Appends the lowercase hex of the first [`KEY_BYTES`] bytes of a digest.
fn push_key_hex(out: &mut String, digest: &[u8]) {
    for &b in &digest[..KEY_BYTES] {
        push_hex(out, u64::from(b), 2);
    }
}

/// What the store keeps of a bearer token. Tokens carry at least 192 random
/// bits, so an unkeyed hash is enough; lookups by hash compare in the
/// database index, which never sees the token itself. A time-ordered token
/// keeps its time prefix in front of the hash; a token of the earlier
/// all-random kind (43 characters) is kept as the bare hash, so links issued
/// before still work. Keys stored before migration 0004 held the whole
/// digest; that migration cut them to this length.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut key = String::with_capacity(12 + 2 * KEY_BYTES);
    if let Some(time) = token.get(..12)
        && token.len() == TOKEN_LEN
        && time.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        key.push_str(time);
    }
    push_key_hex(&mut key, &digest);
    key
}

/// Does the text look like one of our tokens? Cheap filter before any lookup.
pub fn plausible_token(token: &str) -> bool {
    (token.len() == TOKEN_LEN || token.len() == 43)
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a lowercase-hex HMAC-SHA256 signature.
pub fn verify_hmac_hex(key: &[u8], data: &[u8], signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.verify_slice(&sig).is_ok()
}

/// The keyed hash that stands for a national ID everywhere: HMAC-SHA256,
/// cut to [`KEY_BYTES`].
pub fn national_id_hash(secret: &[u8], canonical: &str) -> NidKey {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"national-id:");
    mac.update(canonical.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut key = [0u8; KEY_BYTES];
    key.copy_from_slice(&digest[..KEY_BYTES]);
    NidKey(key)
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::PasswordHasher;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))?;
    Ok(hash.to_string())
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Requests per minute per client address, in fixed one-minute windows.
/// `limit == 0` turns it off.
///
/// Only the current minute's counts are kept: when a new minute starts,
/// the whole table is replaced by an empty one at once, and the old one is
/// dropped outside the lock. Each request costs one hash-map update however
/// many addresses are tracked (the table it replaced was scanned whole,
/// under the lock, once it held 100,000 addresses).
pub struct ClientLimiter {
    limit: u32,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    minute: i64,
    counts: HashMap<IpAddr, u32>,
}

impl ClientLimiter {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            window: Mutex::new(Window::default()),
        }
    }

    /// `Ok(())` to go on, or `Err(seconds)` to wait.
    pub fn check(&self, ip: IpAddr, now_ms: i64) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let minute = now_ms.div_euclid(60_000);
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let stale = (window.minute != minute).then(|| {
            window.minute = minute;
            std::mem::take(&mut window.counts)
        });
        let count = window.counts.entry(ip).or_insert(0);
        let verdict = if *count >= self.limit {
            let wait_ms = (minute + 1) * 60_000 - now_ms;
            Err(u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1))
        } else {
            *count += 1;
            Ok(())
        };
        drop(window);
        drop(stale);
        verdict
    }

    /// Addresses counted in the current minute.
    pub fn tracked(&self) -> usize {
        self.window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(plausible_token(&a));
        assert!(!plausible_token("abc"));
        assert!(!plausible_token(&format!("{}'", &a[..TOKEN_LEN - 1])));
        assert_eq!(token_hash(&a).len(), 12 + 32);
        assert_ne!(token_hash(&a), token_hash(&b));
        assert!(!token_hash(&a).contains(&a[12..]));
        // An all-random token of the earlier kind is still accepted and kept
        // as its bare hash.
        let old = random_secret();
        assert_eq!(old.len(), 43);
        assert!(plausible_token(&old));
        assert_eq!(
            token_hash(&old),
            hex::encode(&Sha256::digest(old.as_bytes())[..16])
        );
    }

    #[test]
    fn stored_token_keys_and_references_grow_with_time() {
        // Keys made later sort after keys made earlier, so the database appends
        // them to its indexes instead of rewriting a random page for each.
        let first_key = token_hash(&random_token());
        let first_ref = random_reference("confirm");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second_key = token_hash(&random_token());
        let second_ref = random_reference("confirm");
        assert!(first_key < second_key, "{first_key} then {second_key}");
        assert!(first_ref < second_ref, "{first_ref} then {second_ref}");
        assert_eq!(first_ref.len(), "confirm-".len() + 32);
        // Secrets stay wholly random.
        assert_ne!(random_secret()[..12], random_secret()[..12]);
    }

    #[test]
    fn hex_digits_as_format_writes_them() {
        for (value, digits) in [
            (0u64, 4u32),
            (0xabc, 4),
            (0x1234_5678_9abc, 12),
            (u64::MAX, 16),
        ] {
            let mut out = String::from("x");
            push_hex(&mut out, value, digits);
            assert_eq!(out, format!("x{value:0width$x}", width = digits as usize));
        }
        // Digits above the width are dropped, as the 48-bit time prefix needs.
        let mut out = String::new();
        push_hex(&mut out, 0x1_0000_0000_0abc, 12);
        assert_eq!(out, "000000000abc");
    }

    #[test]
    fn national_id_hash_depends_on_the_secret() {
        let a = national_id_hash(b"secret-one-0123456", "BE:85073003328");
        let b = national_id_hash(b"secret-two-0123456", "BE:85073003328");
        assert_ne!(a, b);
        assert!(!a.to_string().contains("85073003328"));
        assert_eq!(a, national_id_hash(b"secret-one-0123456", "BE:85073003328"));
    }

    #[test]
    fn stored_keys_are_the_start_of_the_whole_digests_kept_before() {
        // Migration 0004 cuts the keys stored before to their first 128
        // bits; lookups with the keys made now must find them.
        let whole = hmac_hex(b"secret-one-0123456", b"national-id:BE:85073003328");
        assert_eq!(whole.len(), 64);
        // Migration 0005 then stores those 32 hex digits as their 16 bytes.
        let key = national_id_hash(b"secret-one-0123456", "BE:85073003328");
        assert_eq!(key.to_string(), whole[..32]);
        let token = random_token();
        let whole = format!(
            "{}{}",
            &token[..12],
            hex::encode(Sha256::digest(token.as_bytes()))
        );
        assert_eq!(token_hash(&token), whole[..whole.len() - 32]);
        let old = random_secret();
        let whole = hex::encode(Sha256::digest(old.as_bytes()));
        assert_eq!(token_hash(&old), whole[..whole.len() - 32]);
    }

    #[test]
    fn signatures() {
        let sig = hmac_hex(b"k", b"body");
        assert!(verify_hmac_hex(b"k", b"body", &sig));
        assert!(!verify_hmac_hex(b"k", b"body2", &sig));
        assert!(!verify_hmac_hex(b"k", b"body", "zz"));
        assert!(!verify_hmac_hex(b"other", b"body", &sig));
    }

    #[test]
    fn passwords() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn limiter_counts_per_client_per_minute() {
        let l = ClientLimiter::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(l.check(a, 0).is_ok());
        assert!(l.check(a, 1_000).is_ok());
        assert_eq!(l.check(a, 30_000), Err(30));
        assert!(l.check(b, 30_000).is_ok());
        assert!(l.check(a, 60_000).is_ok());
        let off = ClientLimiter::new(0);
        for _ in 0..100 {
            assert!(off.check(a, 0).is_ok());
        }
    }

    #[test]
    fn limiter_keeps_only_the_current_minute() {
        let l = ClientLimiter::new(1);
        // 200,000 addresses in one minute: all counted, each limited.
        for n in 0..200_000u32 {
            let ip = IpAddr::from(n.to_be_bytes());
            assert!(l.check(ip, 5_000).is_ok());
        }
        assert_eq!(l.tracked(), 200_000);
        let first = IpAddr::from(0u32.to_be_bytes());
        assert_eq!(l.check(first, 59_999), Err(1));
        // The next minute starts afresh, with the old table gone at once.
        assert!(l.check(first, 60_000).is_ok());
        assert_eq!(l.tracked(), 1);
        // A clock going backwards starts a window too, never panics.
        assert!(l.check(first, 0).is_ok());
    }
}
