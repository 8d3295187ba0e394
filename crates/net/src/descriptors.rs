//! The open-file budget: listeners' connection caps fitted under the process's limit, with a
//! reserve the clients can never take (the store's connections, the audit journal, outbound
//! connections to the hospitals, log and package files).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for the gateway itself, whatever the listeners' caps.
pub const RESERVE: u64 = 256;

/// Raises the soft open-file limit to the hard one (as Go's runtime does) and returns the soft
/// limit in force; `None` when it is unlimited or cannot be read.
pub fn raise_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && maximum > current
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            },
        )
        .is_err()
    {
        return Some(current);
    }
    getrlimit(Resource::Nofile).current
}

/// Fits connection caps (one per listener) under `limit` descriptors less [`RESERVE`]:
/// scaled down in proportion when they do not fit, each at least 8. `Err` when not even that
/// fits, with the limit the operator must give.
pub fn fit(limit: u64, caps: &mut [&mut usize]) -> Result<bool, u64> {
    let wanted: u64 = caps
        .iter()
        .fold(0u64, |sum, cap| sum.saturating_add(**cap as u64));
    let minimum = RESERVE + 8 * caps.len() as u64;
    if limit < minimum {
        return Err(minimum);
    }
    let available = limit - RESERVE;
    if wanted <= available {
        return Ok(false);
    }
    for cap in caps.iter_mut() {
        let scaled = (**cap as u64).saturating_mul(available) / wanted.max(1);
        **cap = usize::try_from(scaled.max(8)).unwrap_or(8);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn caps_are_scaled_under_the_limit_with_the_reserve_kept() {
        let (mut http, mut mtls, mut mllp) = (1024, 256, 256);
        assert_eq!(fit(1024, &mut [&mut http, &mut mtls, &mut mllp]), Ok(true));
        assert!(
            (http + mtls + mllp) as u64 <= 1024 - RESERVE,
            "{http} {mtls} {mllp}"
        );
        assert!(http > mtls && mtls == mllp);
        let (mut http, mut mllp) = (1024, 256);
        assert_eq!(fit(65536, &mut [&mut http, &mut mllp]), Ok(false));
        assert_eq!((http, mllp), (1024, 256));
        assert_eq!(fit(100, &mut [&mut http]), Err(RESERVE + 8));
    }

    #[test]
    fn the_limit_can_be_read() {
        assert!(raise_limit().is_some_and(|limit| limit >= 64));
    }
}
