// SPDX-License-Identifier: MPL-2.0
//! Helpers the protocol's property tests share.

/// `payload` with each op applied in turn: (position, kind, byte), kind 0 replaces the byte at
/// the position, 1 removes it, 2 inserts `byte` there.
pub fn mutate(payload: &[u8], ops: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut p = payload.to_vec();
    for &(pos, kind, byte) in ops {
        if p.is_empty() {
            p.push(byte);
            continue;
        }
        let i = pos % p.len();
        match kind % 3 {
            0 => p[i] = byte,
            1 => {
                p.remove(i);
            }
            _ => p.insert(i, byte),
        }
    }
    p
}
