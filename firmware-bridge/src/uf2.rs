//! ELF → UF2 conversion for drag-and-drop flashing of the RP2040 (what `elf2uf2-rs` does), plus
//! flash/RAM usage from the ELF's loadable segments.

use std::collections::BTreeMap;

/// RP2040 family id.
pub const RP2040_FAMILY: u32 = 0xE48B_FF56;
const FLASH_START: u32 = 0x1000_0000;
const FLASH_END: u32 = 0x1100_0000;
const RAM_START: u32 = 0x2000_0000;
const RAM_END: u32 = 0x2004_2000;
const PAGE: u32 = 256;

/// Why an ELF could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum Uf2Error {
    #[error("not a 32-bit little-endian ARM ELF file")]
    NotArmElf,
    #[error("ELF is truncated ({0})")]
    Truncated(&'static str),
    #[error("no loadable segment in flash (0x{FLASH_START:08x}..)")]
    NothingToFlash,
}

/// Memory use of a firmware image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes stored in flash (code, read-only data, initial values of data).
    pub flash: u32,
    /// Bytes of RAM reserved statically (data + bss; the stack comes on top).
    pub ram: u32,
}

struct Segment {
    vaddr: u32,
    paddr: u32,
    data: Vec<u8>,
    memsz: u32,
}

fn u16le(b: &[u8], o: usize) -> Result<u16, Uf2Error> {
    b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or(Uf2Error::Truncated("header"))
}

fn u32le(b: &[u8], o: usize) -> Result<u32, Uf2Error> {
    b.get(o..o + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or(Uf2Error::Truncated("header"))
}

fn segments(elf: &[u8]) -> Result<Vec<Segment>, Uf2Error> {
    // e_ident: magic, class 1 (32-bit), data 1 (little-endian); e_machine 40 (ARM).
    if elf.len() < 52 || &elf[..4] != b"\x7fELF" || elf[4] != 1 || elf[5] != 1 || u16le(elf, 18)? != 40 {
        return Err(Uf2Error::NotArmElf);
    }
    let phoff = u32le(elf, 28)? as usize;
    let phentsize = u16le(elf, 42)? as usize;
    let phnum = u16le(elf, 44)? as usize;
    let mut out = Vec::new();
    for i in 0..phnum {
        let h = phoff + i * phentsize;
        if u32le(elf, h)? != 1 {
            continue; // not PT_LOAD
        }
        let offset = u32le(elf, h + 4)? as usize;
        let vaddr = u32le(elf, h + 8)?;
        let paddr = u32le(elf, h + 12)?;
        let filesz = u32le(elf, h + 16)? as usize;
        let memsz = u32le(elf, h + 20)?;
        let data = elf.get(offset..offset + filesz).ok_or(Uf2Error::Truncated("segment data"))?.to_vec();
        out.push(Segment { vaddr, paddr, data, memsz });
    }
    Ok(out)
}

/// Flash and static RAM use.
pub fn usage(elf: &[u8]) -> Result<Usage, Uf2Error> {
    let mut u = Usage { flash: 0, ram: 0 };
    for s in segments(elf)? {
        if (FLASH_START..FLASH_END).contains(&s.paddr) {
            u.flash += s.data.len() as u32;
        }
        if (RAM_START..RAM_END).contains(&s.vaddr) {
            u.ram += s.memsz;
        }
    }
    Ok(u)
}

/// Converts an ELF to UF2 blocks for the RP2040 (loaded at the segments' physical addresses).
pub fn elf_to_uf2(elf: &[u8]) -> Result<Vec<u8>, Uf2Error> {
    let mut pages: BTreeMap<u32, [u8; PAGE as usize]> = BTreeMap::new();
    for s in segments(elf)? {
        if !(FLASH_START..FLASH_END).contains(&s.paddr) {
            continue;
        }
        for (k, &b) in s.data.iter().enumerate() {
            let addr = s.paddr + k as u32;
            let page = pages.entry(addr & !(PAGE - 1)).or_insert([0u8; PAGE as usize]);
            page[(addr % PAGE) as usize] = b;
        }
    }
    if pages.is_empty() {
        return Err(Uf2Error::NothingToFlash);
    }
    let n = pages.len() as u32;
    let mut out = Vec::with_capacity(pages.len() * 512);
    for (i, (addr, data)) in pages.iter().enumerate() {
        let mut block = [0u8; 512];
        let words = [0x0A32_4655, 0x9E5D_5157, 0x0000_2000, *addr, PAGE, i as u32, n, RP2040_FAMILY];
        for (k, w) in words.iter().enumerate() {
            block[k * 4..k * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        block[32..32 + PAGE as usize].copy_from_slice(data);
        block[508..512].copy_from_slice(&0x0AB1_6F30u32.to_le_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_elf(paddr: u32, data: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 52 + 32];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 1;
        e[5] = 1;
        e[18..20].copy_from_slice(&40u16.to_le_bytes());
        e[28..32].copy_from_slice(&52u32.to_le_bytes());
        e[42..44].copy_from_slice(&32u16.to_le_bytes());
        e[44..46].copy_from_slice(&1u16.to_le_bytes());
        let off = e.len() as u32;
        let h = 52;
        for (k, v) in [1u32, off, paddr, paddr, data.len() as u32, data.len() as u32].iter().enumerate() {
            e[h + k * 4..h + k * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        e.extend_from_slice(data);
        e
    }

    #[test]
    fn blocks_have_the_uf2_layout() {
        let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let uf2 = elf_to_uf2(&tiny_elf(0x1000_0000, &data)).expect("uf2");
        assert_eq!(uf2.len(), 2 * 512, "300 bytes span two 256-byte pages");
        let w = |b: &[u8], k: usize| u32::from_le_bytes([b[k * 4], b[k * 4 + 1], b[k * 4 + 2], b[k * 4 + 3]]);
        assert_eq!((w(&uf2, 0), w(&uf2, 1), w(&uf2, 7)), (0x0A32_4655, 0x9E5D_5157, RP2040_FAMILY));
        assert_eq!((w(&uf2, 3), w(&uf2[512..], 3)), (0x1000_0000, 0x1000_0100));
        assert_eq!((w(&uf2, 5), w(&uf2, 6)), (0, 2));
        assert_eq!(&uf2[32..40], &data[..8]);
        assert_eq!(&uf2[512 + 32..512 + 32 + 44], &data[256..300]);
        assert_eq!(usage(&tiny_elf(0x1000_0000, &data)).expect("usage"), Usage { flash: 300, ram: 0 });
    }

    #[test]
    fn rejects_non_arm_and_ram_only_images() {
        assert!(matches!(elf_to_uf2(b"not an elf"), Err(Uf2Error::NotArmElf)));
        assert!(matches!(elf_to_uf2(&tiny_elf(0x2000_0000, &[1, 2, 3])), Err(Uf2Error::NothingToFlash)));
    }
}
