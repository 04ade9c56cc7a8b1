//! The safety number: a group epoch's `epoch_authenticator` (RFC 9420
//! §8.7) as digits that two members read aloud to each other out of band.
//! Equal numbers mean both hold the same epoch of the same group, so no
//! one sits between them (RFC 9750 §"Authentication Service compromise":
//! members compare a value derived from the group state out of band).

/// The number of digit groups in a safety number.
pub const SAFETY_NUMBER_GROUPS: usize = 12;
/// The digits of each group.
pub const SAFETY_NUMBER_GROUP_DIGITS: usize = 5;

/// Renders an epoch authenticator as [`SAFETY_NUMBER_GROUPS`] groups of
/// [`SAFETY_NUMBER_GROUP_DIGITS`] decimal digits separated by spaces:
/// each group is a big-endian 40-bit chunk of the authenticator (the first
/// 60 bytes, the authenticator repeated if it is shorter) reduced modulo
/// 100000. With SHA-256's 32-byte authenticator that reads the first 5
/// bytes per group, cycling through the value; about 199 bits of the
/// 256 are shown (12 × log2(10^5)). An empty authenticator gives an
/// empty string.
///
/// ```
/// let n = hsmls_client::safety_number(&[0u8; 32]);
/// assert_eq!(n, "00000 00000 00000 00000 00000 00000 00000 00000 00000 00000 00000 00000");
/// ```
pub fn safety_number(epoch_authenticator: &[u8]) -> String {
    if epoch_authenticator.is_empty() {
        return String::new();
    }
    let mut groups = Vec::with_capacity(SAFETY_NUMBER_GROUPS);
    let mut bytes = epoch_authenticator.iter().cycle();
    for _ in 0..SAFETY_NUMBER_GROUPS {
        let mut chunk: u64 = 0;
        for _ in 0..5 {
            chunk = (chunk << 8) | u64::from(*bytes.next().unwrap_or(&0));
        }
        groups.push(format!(
            "{:0width$}",
            chunk % 100_000,
            width = SAFETY_NUMBER_GROUP_DIGITS
        ));
    }
    groups.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // 0x0000000001 = 1, 0xffffffffff = 1099511627775 -> 27775.
        let mut a = [0u8; 32];
        a[4] = 1;
        assert_eq!(
            safety_number(&a)[..11].to_string(),
            "00001 00000".to_string()
        );
        let n = safety_number(&[0xff; 32]);
        assert_eq!(n.split(' ').collect::<Vec<_>>(), vec!["27775"; 12]);
        // 32 bytes: group 7 takes bytes 30, 31, 0, 1, 2.
        let seq: Vec<u8> = (0..32).collect();
        let n = safety_number(&seq);
        let groups: Vec<&str> = n.split(' ').collect();
        assert_eq!(groups.len(), 12);
        let chunk = u64::from_be_bytes([0, 0, 0, 0x1e, 0x1f, 0x00, 0x01, 0x02]);
        assert_eq!(groups[6], format!("{:05}", chunk % 100_000));
        assert_eq!(safety_number(&[]), "");
    }

    #[test]
    fn one_bit_changes_the_number() {
        let a = [7u8; 32];
        let mut b = a;
        b[0] ^= 1;
        assert_ne!(safety_number(&a), safety_number(&b));
        assert_eq!(safety_number(&a), safety_number(&a));
        assert_eq!(safety_number(&a).len(), 12 * 5 + 11);
    }
}
