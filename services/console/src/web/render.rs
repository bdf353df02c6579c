//! What a page shows, and its HTML: the view model handlers fill, and the
//! MiniJinja templates (embedded in the binary) that render it with
//! HTML auto-escaping, so nothing from the data can inject markup. The
//! only unescaped output is the SVG of [`super::chart`], which escapes its
//! own text.

use std::sync::OnceLock;

use axum::response::{Html, IntoResponse, Response};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::config::Role;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("login.html", include_str!("templates/login.html")),
    ("page.html", include_str!("templates/page.html")),
    ("message.html", include_str!("templates/message.html")),
];

/// The stylesheet, served at `/assets/console.css`.
pub const CSS: &str = include_str!("assets/console.css");

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        for (name, source) in TEMPLATES {
            // The templates are part of the binary and covered by tests:
            // one that does not parse fails every page test.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "console template does not parse");
            }
        }
        env
    })
}

/// One table cell: its text, whether it is a number (right-aligned), and
/// an optional link.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Cell {
    pub text: String,
    pub numeric: bool,
    pub href: Option<String>,
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Self {
        let text = s.into();
        let numeric = !text.is_empty()
            && text
                .replace([',', ' ', '%'], ".")
                .trim_end_matches('.')
                .parse::<f64>()
                .is_ok();
        Self {
            text,
            numeric,
            href: None,
        }
    }

    pub fn link(s: impl Into<String>, href: impl Into<String>) -> Self {
        Self {
            href: Some(href.into()),
            ..Self::text(s)
        }
    }
}

/// One block of a page: a title, maybe a chart, and its data table (which
/// is also the CSV export).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Section {
    /// The HTML id of the table, and the `table` parameter of its CSV.
    pub id: String,
    pub title: String,
    pub note: Option<String>,
    /// SVG from [`super::chart`].
    pub chart: Option<String>,
    pub caption: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// What to say when there is no row.
    pub empty: String,
    pub csv_href: Option<String>,
    /// Preformatted text after the table (a diff).
    pub pre: Option<String>,
}

impl Section {
    /// The rows as plain text, for CSV.
    pub fn text_rows(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|r| r.iter().map(|c| c.text.clone()).collect())
            .collect()
    }
}

/// A key figure shown big, with a stable `data-indicator` id.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub id: String,
    pub label: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelectOption {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// One filter field: a select when it has options, else an input.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    pub name: String,
    pub label: String,
    pub kind: String,
    pub value: String,
    pub hint: Option<String>,
    pub options: Vec<SelectOption>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Filters {
    pub action: String,
    pub fields: Vec<Field>,
}

/// A page's content.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Page {
    pub title: String,
    pub intro: Option<String>,
    pub filters: Option<Filters>,
    pub figures: Vec<Figure>,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Serialize)]
struct NavItem {
    href: &'static str,
    label: &'static str,
    current: bool,
}

/// The menu: what `role` may open; `current` is the page's path.
fn nav(role: Role, current: &str) -> Vec<NavItem> {
    let mut items = vec![
        ("/", "Vue d'ensemble"),
        ("/overdue", "Demandes en retard"),
        ("/rules", "Révisions des règles"),
        ("/explain", "Expliquer un contact"),
    ];
    if role >= Role::Ops {
        items.push(("/dead-letters", "Lettres mortes"));
        items.push(("/identity-conflicts", "Conflits d'identité"));
    }
    items
        .into_iter()
        .map(|(href, label)| NavItem {
            href,
            label,
            current: href == current,
        })
        .collect()
}

/// Who is looking, for the header.
#[derive(Debug, Clone)]
pub struct Viewer<'a> {
    pub user: &'a str,
    pub role: Role,
    /// The logout form's token; `None` for proxy sessions (the proxy
    /// signs out).
    pub csrf: Option<String>,
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Viewer => "lecture",
        Role::Ops => "exploitation",
    }
}

fn render(name: &str, ctx: minijinja::Value) -> Response {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "console page did not render");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Erreur interne de la console.",
            )
                .into_response()
        }
    }
}

/// A page of the console for `viewer`; `path` marks the current menu item.
pub fn page(viewer: &Viewer<'_>, path: &str, page: &Page) -> Response {
    render(
        "page.html",
        minijinja::context! {
            title => page.title,
            intro => page.intro,
            filters => page.filters,
            figures => page.figures,
            sections => page.sections,
            user => viewer.user,
            role_label => role_label(viewer.role),
            csrf => viewer.csrf,
            nav => nav(viewer.role, path),
        },
    )
}

/// A short message page (forbidden, not found…), with a link back.
pub fn message(viewer: Option<&Viewer<'_>>, title: &str, message: &str) -> Response {
    render(
        "message.html",
        minijinja::context! {
            title => title,
            message => message,
            link => minijinja::context! { href => "/", label => "Retour à la vue d'ensemble" },
            user => viewer.map(|v| v.user),
            role_label => viewer.map(|v| role_label(v.role)),
            csrf => viewer.and_then(|v| v.csrf.clone()),
            nav => viewer.map(|v| nav(v.role, "")),
        },
    )
}

/// The login form.
pub fn login(csrf: &str, next: &str, user: &str, error: Option<&str>) -> Response {
    render(
        "login.html",
        minijinja::context! {
            title => "Connexion",
            login_csrf => csrf,
            next => next,
            login_user => user,
            error => error,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes_data() {
        for (name, _) in TEMPLATES {
            assert!(env().get_template(name).is_ok(), "{name}");
        }
        let p = Page {
            title: "Service <voirie>".into(),
            sections: vec![Section {
                id: "t".into(),
                title: "T".into(),
                caption: "Légende".into(),
                columns: vec!["A".into(), "B".into()],
                rows: vec![vec![Cell::text("<script>"), Cell::text("12")]],
                ..Section::default()
            }],
            ..Page::default()
        };
        let viewer = Viewer {
            user: "marie",
            role: Role::Viewer,
            csrf: Some("tok".into()),
        };
        let r = page(&viewer, "/", &p);
        let body = futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(html.contains(r#"<html lang="fr">"#));
        assert!(html.contains("Service &lt;voirie&gt;"));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(
            html.contains(r#"<th scope="row">&lt;script&gt;</th><td class="nombre">12</td>"#),
            "{html}"
        );
        assert!(html.contains("<caption>Légende</caption>"));
        assert!(html.contains(r##"href="#contenu""##));
        assert!(!html.contains("Lettres mortes"), "a viewer's menu has no ops pages");
    }
}
