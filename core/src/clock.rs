//! The core's clock: nanoseconds since the Unix epoch in a `u64`, as every host gives the time
//! ([`crate::host::Host::now_unix_nanos`]); durations from the configuration meet it here.

use std::time::Duration;

/// `d` in nanoseconds, saturating: a duration past `u64::MAX` ns (584 years) is "never".
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
