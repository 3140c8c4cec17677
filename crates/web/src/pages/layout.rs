//! The frame every page shares.

use maud::{DOCTYPE, Markup, html};

/// A full page: title, header, `body`, and the embedded assets.
pub(crate) fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · idempipe" }
                link rel="stylesheet" href=(crate::assets::CSS_PATH);
                script src=(crate::assets::JS_PATH) defer {}
            }
            body {
                nav.top { a href="/" { "idempipe" } span.muted { " runs, items, failures" } }
                (body)
                div #toast role="status" aria-live="polite" {}
            }
        }
    }
}
