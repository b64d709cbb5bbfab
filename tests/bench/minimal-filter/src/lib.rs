//! Reads `traceparent` and `x-request-id`, writes `x-minimal`: the least a tracing filter does.
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;
impl Context for Root {}
impl RootContext for Root {
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter;
impl Context for Filter {}
impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let a = self.get_http_request_header("traceparent");
        let b = self.get_http_request_header("x-request-id");
        let n = a.map_or(0, |v| v.len()) + b.map_or(0, |v| v.len());
        self.set_http_request_header("x-minimal", Some(if n > 0 { "1" } else { "0" }));
        Action::Continue
    }
}
