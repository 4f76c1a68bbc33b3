//! The console: a small built-in web page at `/` showing the submission statistics
//! (`/v1/stats/...`) and the daily AI analysis (`/v1/analyses`, `/v1/summaries`).
//! Plain HTML, CSS and JavaScript, embedded in the binary; nothing is fetched from
//! elsewhere. See docs/console.md.

use poem::http::{Method, StatusCode, header};
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response};

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// The page's security headers: only this origin's scripts, styles and fetches.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-content-type-options", "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header("referrer-policy", "no-referrer")
        .body(body)
}

fn not_found() -> Response {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body("not found")
}

/// The console's answer to a GET of `path`, if the path is the console's.
fn serve(path: &str) -> Option<Response> {
    match path {
        "/" => Some(asset("text/html; charset=utf-8", INDEX_HTML)),
        "/console/console.js" => Some(asset("text/javascript; charset=utf-8", CONSOLE_JS)),
        "/console/console.css" => Some(asset("text/css; charset=utf-8", CONSOLE_CSS)),
        other if other.starts_with("/console/") => Some(not_found()),
        _ => None,
    }
}

/// Wraps the API (nested at `/`) so that GET `/` and `/console/*` serve the console and
/// everything else goes on to the API. (A separate `.at("/")` would lose to the API's
/// catch-all nest.)
pub fn around<E>(api: E) -> impl Endpoint
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    api.into_endpoint().around(|api, req: Request| async move {
        let page = (req.method() == Method::GET || req.method() == Method::HEAD)
            .then(|| serve(req.uri().path()))
            .flatten();
        match page {
            Some(response) => Ok(response),
            None => api.call(req).await.map(IntoResponse::into_response),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::test::TestClient;

    #[poem::handler]
    fn fake_api() -> &'static str {
        "api"
    }

    fn app() -> poem::Route {
        poem::Route::new().nest("/", around(poem::Route::new().at("/v1/x", fake_api)))
    }

    #[tokio::test]
    async fn serves_the_page_and_its_files() {
        let client = TestClient::new(app());
        let page = client.get("/").send().await;
        page.assert_status_is_ok();
        page.assert_content_type("text/html; charset=utf-8");
        let js = client.get("/console/console.js").send().await;
        js.assert_status_is_ok();
        client
            .get("/console/console.css")
            .send()
            .await
            .assert_status_is_ok();
        client
            .get("/console/nope.js")
            .send()
            .await
            .assert_status(StatusCode::NOT_FOUND);
        let answer = client.get("/v1/x").send().await;
        answer.assert_text("api").await;
    }

    #[test]
    fn the_script_never_writes_html() {
        assert!(!CONSOLE_JS.contains("innerHTML"));
        assert!(!CONSOLE_JS.contains("outerHTML"));
        assert!(!CONSOLE_JS.contains("insertAdjacentHTML"));
        assert!(!CONSOLE_JS.contains("document.write"));
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
    }
}
