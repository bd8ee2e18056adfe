//! Envoy's response flags as a bit set: the request path sets bits as it learns what happened;
//! the access log renders them once, in Envoy's order, joined with `,` (`-` when none).

use std::fmt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u32);

/// Short names in Envoy's bit order (`ResponseFlag` in envoy/stream_info), which is also the
/// order they are rendered in: a connection failure on the last retry is `UF,URX`.
const NAMES: [(ResponseFlags, &str); 11] = [
    (ResponseFlags::UH, "UH"),
    (ResponseFlags::UT, "UT"),
    (ResponseFlags::UF, "UF"),
    (ResponseFlags::UC, "UC"),
    (ResponseFlags::UO, "UO"),
    (ResponseFlags::NR, "NR"),
    (ResponseFlags::DC, "DC"),
    (ResponseFlags::URX, "URX"),
    (ResponseFlags::SI, "SI"),
    (ResponseFlags::DPE, "DPE"),
    (ResponseFlags::UPE, "UPE"),
];

impl ResponseFlags {
    pub const NONE: Self = Self(0);
    /// No healthy upstream host.
    pub const UH: Self = Self(1 << 1);
    /// Upstream request timeout (the route timeout).
    pub const UT: Self = Self(1 << 2);
    /// Upstream connection failure.
    pub const UF: Self = Self(1 << 5);
    /// Upstream connection termination (reset before a response).
    pub const UC: Self = Self(1 << 6);
    /// Upstream overflow (circuit breaker).
    pub const UO: Self = Self(1 << 7);
    /// No route.
    pub const NR: Self = Self(1 << 8);
    /// The downstream connection terminated (the client went away).
    pub const DC: Self = Self(1 << 14);
    /// Retries ran out.
    pub const URX: Self = Self(1 << 15);
    /// Stream idle timeout.
    pub const SI: Self = Self(1 << 16);
    /// Malformed downstream request.
    pub const DPE: Self = Self(1 << 18);
    /// Malformed upstream response.
    pub const UPE: Self = Self(1 << 23);

    #[inline]
    pub fn insert(&mut self, f: Self) {
        self.0 |= f.0;
    }

    #[inline]
    pub fn contains(self, f: Self) -> bool {
        self.0 & f.0 == f.0 && f.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, o: Self) -> Self {
        Self(self.0 | o.0)
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_in_envoy_order() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!(
            (ResponseFlags::URX | ResponseFlags::UF).to_string(),
            "UF,URX"
        );
        assert_eq!(
            (ResponseFlags::URX | ResponseFlags::UT).to_string(),
            "UT,URX"
        );
        assert_eq!(ResponseFlags::DC.to_string(), "DC");
        let mut f = ResponseFlags::NONE;
        f.insert(ResponseFlags::UC);
        f.insert(ResponseFlags::URX);
        assert!(f.contains(ResponseFlags::UC) && !f.contains(ResponseFlags::UF));
        assert_eq!(f.to_string(), "UC,URX");
    }
}
