//! The stylesheet and the one enhancing script, compiled into the binary and served under a
//! name that carries their content hash, so a browser may keep them for a year: a changed
//! file is a new name.

use std::sync::LazyLock;

use axum::{extract::Path, response::IntoResponse, response::Response};
use http::{HeaderValue, header};

pub struct Asset {
    stem: &'static str,
    ext: &'static str,
    mime: &'static str,
    body: &'static [u8],
    name: LazyLock<String>,
}

impl Asset {
    /// `/assets/site.<16 hex of SHA-256>.css`
    pub fn url(&self) -> String {
        format!("/assets/{}", &*self.name)
    }
}

fn hashed(stem: &str, ext: &str, body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    format!("{stem}.{}.{ext}", &hex::encode(digest.as_ref())[..16])
}

macro_rules! asset {
    ($stem:literal, $ext:literal, $mime:literal) => {
        Asset {
            stem: $stem,
            ext: $ext,
            mime: $mime,
            body: include_bytes!(concat!("assets/", $stem, ".", $ext)),
            name: LazyLock::new(|| {
                hashed(
                    $stem,
                    $ext,
                    include_bytes!(concat!("assets/", $stem, ".", $ext)),
                )
            }),
        }
    };
}

pub static CSS: Asset = asset!("site", "css", "text/css; charset=utf-8");
pub static JS: Asset = asset!("site", "js", "text/javascript; charset=utf-8");

/// Only the current hashed names answer; an old or guessed name is a 404.
pub async fn serve(Path(file): Path<String>) -> Response {
    for a in [&CSS, &JS] {
        if *a.name == file {
            debug_assert!(file.starts_with(a.stem) && file.ends_with(a.ext));
            let mut res = a.body.into_response();
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            return res;
        }
    }
    crate::web::Error::NotFound("no such asset".into()).into_response()
}
