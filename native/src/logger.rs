//! `log` records go to Envoy's log under its `dynamic_modules` id
//! (`envoy_dynamic_module_callback_log`). The maximum level follows Envoy's (`-l`, or the admin
//! `/logging` endpoint), re-read on the main thread at every configuration and tick, so a
//! disabled `debug!` on the request path costs no call into Envoy.

use crate::abi::{self, log_level, ModuleBuffer};
use log::{Level, LevelFilter, Log, Metadata, Record};

struct EnvoyLogger;

static LOGGER: EnvoyLogger = EnvoyLogger;

impl Log for EnvoyLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => log_level::ERROR,
            Level::Warn => log_level::WARN,
            Level::Info => log_level::INFO,
            Level::Debug => log_level::DEBUG,
            Level::Trace => log_level::TRACE,
        };
        let message = record.args().to_string();
        // SAFETY: the message is read during the call only.
        unsafe {
            abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes()))
        };
    }

    fn flush(&self) {}
}

/// Installs the logger (once per process; later calls change nothing).
pub fn init() {
    let _ = log::set_logger(&LOGGER);
    refresh_level();
}

/// The most verbose level Envoy has enabled for dynamic modules.
pub fn refresh_level() {
    let levels = [
        (log_level::TRACE, LevelFilter::Trace),
        (log_level::DEBUG, LevelFilter::Debug),
        (log_level::INFO, LevelFilter::Info),
        (log_level::WARN, LevelFilter::Warn),
        (log_level::ERROR, LevelFilter::Error),
    ];
    // SAFETY: a plain query.
    let max = levels
        .iter()
        .find(|(level, _)| unsafe { abi::envoy_dynamic_module_callback_log_enabled(*level) } != 0)
        .map_or(LevelFilter::Off, |(_, filter)| *filter);
    log::set_max_level(max);
}
