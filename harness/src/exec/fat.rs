//! A universal ("fat") Mach-O file made of thin ones, as `lipo -create` makes it: a `struct fat_header`
//! then a `struct fat_arch` per slice, all big-endian, and each slice at an offset aligned to 2^14, the
//! arm64 page size (mach-o/fat.h in the macOS SDK; cctools' lipo aligns arm64 slices so). `build.rs`
//! makes the probe this way for both Apple architectures, so that a program run under Rosetta, or a
//! child of the other architecture, loads the slice of its own.
//!
//! This file is also compiled into `build.rs` (`#[path]`), so it uses nothing of the crate.

/// `FAT_MAGIC`, mach-o/fat.h.
pub const FAT_MAGIC: u32 = 0xcafe_babe;

/// `MH_MAGIC_64`, mach-o/loader.h: a thin 64-bit file, in the byte order of its machine (little-endian
/// for both Apple architectures).
const MH_MAGIC_64: u32 = 0xfeed_facf;

/// Each slice's alignment, as a power of two.
pub const ALIGN_LOG2: u32 = 14;

/// The universal file holding the thin 64-bit Mach-O files `thin`, in that order; an error names the
/// first that is not one, or a size past what the header's 32-bit offsets hold.
pub fn universal(thin: &[&[u8]]) -> Result<Vec<u8>, String> {
    let count = u32::try_from(thin.len()).map_err(|_| "too many slices".to_owned())?;
    let mut out = vec![0u8; 8 + 20 * thin.len()];
    out[0..4].copy_from_slice(&FAT_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&count.to_be_bytes());
    for (i, slice) in thin.iter().enumerate() {
        let field = |at: usize| slice.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if field(0) != Some(MH_MAGIC_64) || slice.len() < 32 {
            return Err(format!("slice {i} is not a thin 64-bit Mach-O file"));
        }
        let (cputype, cpusubtype) = (field(4).unwrap_or(0), field(8).unwrap_or(0));
        let align = 1usize << ALIGN_LOG2;
        let offset = out.len().div_ceil(align) * align;
        out.resize(offset, 0);
        out.extend_from_slice(slice);
        let too_large = |_| format!("slice {i} ends past 4 GiB, beyond a fat_arch's 32-bit offsets");
        let (offset, size) =
            (u32::try_from(offset).map_err(too_large)?, u32::try_from(slice.len()).map_err(too_large)?);
        let arch = 8 + 20 * i;
        for (n, value) in [cputype, cpusubtype, offset, size, ALIGN_LOG2].into_iter().enumerate() {
            out[arch + 4 * n..arch + 4 * n + 4].copy_from_slice(&value.to_be_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thin 64-bit Mach-O header of `cputype`, padded to `len` bytes.
    fn thin(cputype: u32, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[..4].copy_from_slice(&MH_MAGIC_64.to_le_bytes());
        b[4..8].copy_from_slice(&cputype.to_le_bytes());
        b[len - 1] = 0xee;
        b
    }

    #[test]
    fn slices_follow_the_header_each_at_a_16_kib_boundary() {
        let (x86, arm) = (thin(0x0100_0007, 100), thin(0x0100_000c, 20_000));
        let fat = universal(&[&x86, &arm]).unwrap();
        let be = |at: usize| u32::from_be_bytes(fat[at..at + 4].try_into().unwrap());
        assert_eq!((be(0), be(4)), (FAT_MAGIC, 2));
        // cputype, cpusubtype, offset, size, align of each.
        assert_eq!([be(8), be(12), be(16), be(20), be(24)], [0x0100_0007, 0, 0x4000, 100, 14]);
        assert_eq!([be(28), be(32), be(36), be(40), be(44)], [0x0100_000c, 0, 0x8000, 20_000, 14]);
        assert_eq!(&fat[0x4000..0x4000 + 100], &x86[..]);
        assert_eq!(&fat[0x8000..], &arm[..]);
    }

    #[test]
    fn what_is_not_a_thin_64_bit_mach_o_file_is_named() {
        let fat = universal(&[&thin(0x0100_0007, 64)]).unwrap();
        assert_eq!(universal(&[&thin(0x0100_0007, 64), &fat]), Err("slice 1 is not a thin 64-bit Mach-O file".into()));
        assert_eq!(universal(&[b"\x7fELF"]), Err("slice 0 is not a thin 64-bit Mach-O file".into()));
    }
}
