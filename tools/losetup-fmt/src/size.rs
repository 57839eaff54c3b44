//! Size arguments the way util-linux's `strtosize()` reads them:
//! a number (decimal, `0x` hex or `0` octal, like `strtoumax(…, 0)`),
//! optionally a decimal fraction, and an optional suffix:
//! `K`, `M`, `G`, `T`, `P`, `E`, `Z`, `Y` (also lower case, or followed by
//! `iB`) are powers of 1024; the same letters followed by `B` (`KB`, `MB`)
//! are powers of 1000. A fraction needs a suffix (`1.5M`).

/// Why a size did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeError {
    /// Not a size at all.
    Invalid,
    /// Does not fit in 64 bits.
    Range,
}

fn digit_value(b: u8, radix: u32) -> Option<u32> {
    (b as char).to_digit(radix)
}

/// Parses `s` as a size in bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if i < b.len() && b[i] == b'+' {
        i += 1;
    } else if i < b.len() && b[i] == b'-' {
        return Err(SizeError::Invalid);
    }
    let mut radix = 10;
    if b[i..].len() >= 2 && b[i] == b'0' && (b[i + 1] | 0x20) == b'x' {
        if b.get(i + 2).and_then(|&c| digit_value(c, 16)).is_some() {
            radix = 16;
            i += 2;
        }
    } else if b.get(i) == Some(&b'0') {
        radix = 8;
    }
    let start = i;
    let mut value: u64 = 0;
    let mut overflow = false;
    while let Some(d) = b.get(i).and_then(|&c| digit_value(c, radix)) {
        match value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        i += 1;
    }
    if i == start {
        return Err(SizeError::Invalid);
    }
    if overflow {
        return Err(SizeError::Range);
    }
    // Optional decimal fraction: digits after '.'.
    let mut frac: u128 = 0;
    let mut frac_div: u128 = 1;
    let mut has_frac = false;
    if b.get(i) == Some(&b'.') {
        i += 1;
        has_frac = true;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            // Digits past 1e-30 cannot change a 64-bit result.
            if frac_div < 10u128.pow(30) {
                frac = frac * 10 + u128::from(c - b'0');
                frac_div *= 10;
            }
            i += 1;
        }
    }
    let suffix = &b[i..];
    if suffix.is_empty() {
        return if has_frac && frac != 0 {
            Err(SizeError::Invalid)
        } else {
            Ok(value)
        };
    }
    let exp = match suffix[0].to_ascii_uppercase() {
        b'K' => 1,
        b'M' => 2,
        b'G' => 3,
        b'T' => 4,
        b'P' => 5,
        b'E' => 6,
        b'Z' => 7,
        b'Y' => 8,
        _ => return Err(SizeError::Invalid),
    };
    let base: u128 = match &suffix[1..] {
        b"" | b"iB" | b"ib" => 1024,
        b"B" | b"b" => 1000,
        _ => return Err(SizeError::Invalid),
    };
    let mult = base.pow(exp);
    // mult ≤ 1024^8 < 2^81 and value < 2^64: the product fits in u128.
    let whole = u128::from(value)
        .checked_mul(mult)
        .ok_or(SizeError::Range)?;
    let part = frac.checked_mul(mult).ok_or(SizeError::Range)? / frac_div;
    let total = whole.checked_add(part).ok_or(SizeError::Range)?;
    u64::try_from(total).map_err(|_| SizeError::Range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size(" 42"), Ok(42));
        assert_eq!(parse_size("+42"), Ok(42));
        assert_eq!(parse_size("0x200"), Ok(512));
        assert_eq!(parse_size("0X1f"), Ok(31));
        assert_eq!(parse_size("010"), Ok(8));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn binary_suffixes() {
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("1P"), Ok(1 << 50));
        assert_eq!(parse_size("1E"), Ok(1 << 60));
        assert_eq!(parse_size("0Z"), Ok(0));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("0.5M"), Ok(512 << 10));
        assert_eq!(parse_size("1.25GiB"), Ok(5 << 28));
    }

    #[test]
    fn decimal_suffixes() {
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("1kb"), Ok(1000));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5KB"), Ok(1500));
    }

    #[test]
    fn invalid() {
        for s in [
            "", " ", "-1", "abc", "1X", "1KK", "1Kx", "1iB", "B", "1B", "1.5", "0x", "08", "1 K",
            "1K ", "K",
        ] {
            assert_eq!(parse_size(s), Err(SizeError::Invalid), "{s:?}");
        }
        // "0x" alone reads as 0 followed by garbage "x", like strtoumax.
    }

    #[test]
    fn out_of_range() {
        assert_eq!(parse_size("18446744073709551616"), Err(SizeError::Range));
        assert_eq!(parse_size("16E"), Err(SizeError::Range));
        assert_eq!(parse_size("1Z"), Err(SizeError::Range));
        assert_eq!(parse_size("1Y"), Err(SizeError::Range));
        assert_eq!(parse_size("15.9999E"), Ok(18446628781559090931));
    }
}
