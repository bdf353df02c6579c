//! The pages: overview, one service, one typology, the overdue list, dead
//! letters, identity conflicts, rules revisions and `explain`; each also
//! as JSON under `/api/` and each table as CSV (`?csv=<table id>`, the
//! page's other parameters kept).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};

use super::{
    WebState,
    auth::User,
    chart,
    config::Role,
    csv,
    render::{self, Cell, Field, Figure, Filters, Page, Section, SelectOption},
};
use crate::{
    ConsoleError,
    indicators::{Filter, Granularity, MixRow, Overview, Table},
};

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/", get(overview))
        .route("/service/{service}", get(service))
        .route("/typology/{typology}", get(typology))
        .route("/overdue", get(overdue))
        .route("/dead-letters", get(dead_letters))
        .route("/identity-conflicts", get(identity_conflicts))
        .route("/rules", get(rules))
        .route("/explain", get(explain))
        .route("/api/overview", get(api_overview))
        .route("/api/service/{service}", get(api_service))
        .route("/api/typology/{typology}", get(api_typology))
        .route("/api/overdue", get(api_overdue))
        .route("/api/dead-letters", get(api_dead_letters))
        .route("/api/identity-conflicts", get(api_identity_conflicts))
        .route("/api/rules", get(api_rules))
        .route("/api/explain", get(api_explain))
        .fallback(not_found)
}

/// The query string of every page: the filter, and which table to export.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Params {
    pub from: String,
    pub to: String,
    pub granularity: String,
    pub service: String,
    pub channel: String,
    pub typology: String,
    pub site: String,
    /// A table's id: answer its CSV instead of the page.
    #[serde(skip_serializing)]
    pub csv: String,
    /// Rules revisions to compare; a contact id to explain.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub a: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub b: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub contact: String,
}

/// A request the console cannot answer, as the page or API says it.
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<ConsoleError> for Failure {
    fn from(e: ConsoleError) -> Self {
        let status = match &e {
            ConsoleError::Invalid(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = if status.is_server_error() {
            // The detail goes to the log, not to the browser.
            tracing::warn!(error = %e, "console query failed");
            "Les indicateurs ne sont pas disponibles pour le moment : réessayez dans un instant.".to_owned()
        } else {
            e.to_string()
        };
        Self { status, message }
    }
}

fn retry_after(mut r: Response, status: StatusCode) -> Response {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(5u32));
    }
    r
}

impl Failure {
    fn page(self, user: &User) -> Response {
        let title = match self.status {
            StatusCode::BAD_REQUEST => "Demande incorrecte",
            StatusCode::NOT_FOUND => "Introuvable",
            _ => "Indisponible",
        };
        let mut r = render::message(Some(&user.viewer()), title, &self.message);
        *r.status_mut() = self.status;
        retry_after(r, self.status)
    }

    fn api(self) -> Response {
        let status = self.status;
        retry_after(
            (status, Json(serde_json::json!({ "error": self.message }))).into_response(),
            status,
        )
    }
}

async fn not_found(user: User) -> Response {
    Failure {
        status: StatusCode::NOT_FOUND,
        message: "Cette page n'existe pas.".into(),
    }
    .page(&user)
}

fn today() -> NaiveDate {
    chrono::Utc::now().with_timezone(&chrono_tz::Europe::Paris).date_naive()
}

fn date(name: &str, label: &str, value: &str) -> Result<Option<NaiveDate>, Failure> {
    if value.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| Failure::bad(format!("{label} ({name}) : « {value} » n'est pas une date AAAA-MM-JJ.")))
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl Params {
    /// The filter: by default the last 30 days, by day.
    fn filter(&self) -> Result<Filter, Failure> {
        let to = date("to", "Fin de période", &self.to)?.unwrap_or_else(today);
        let from = date("from", "Début de période", &self.from)?.unwrap_or(to - Duration::days(29));
        let granularity = if self.granularity.is_empty() {
            Granularity::Day
        } else {
            self.granularity
                .parse()
                .map_err(|_| Failure::bad("Granularité (granularity) : jour (day), semaine (week) ou mois (month)."))?
        };
        let filter = Filter {
            from,
            to,
            granularity,
            service: some(&self.service),
            channel: some(&self.channel),
            typology: some(&self.typology),
            site: some(&self.site),
        };
        filter.validate()?;
        Ok(filter)
    }

    /// This query string with `csv=<table>` added.
    fn csv_href(&self, path: &str, table: &str) -> String {
        let mut q = serde_urlencoded::to_string(self).unwrap_or_default();
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str("csv=");
        q.push_str(table);
        format!("{path}?{q}")
    }
}

/// What an empty key (no typology, no site) is shown as.
const NOT_SET: &str = "(non renseigné)";

/// A number cell as the French read it: decimal comma.
fn french(s: &str) -> String {
    if s.parse::<f64>().is_ok() {
        s.replace('.', ",")
    } else {
        s.to_owned()
    }
}

/// A section from a table: cells in French notation, the first column
/// linked when `link` says where.
fn section(
    id: &str,
    title: &str,
    table: &Table,
    chart: Option<String>,
    link: Option<&dyn Fn(&str) -> String>,
) -> Section {
    let rows = table
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, cell)| match (i, link) {
                    (0, _) if cell.is_empty() => Cell::text(NOT_SET),
                    (0, Some(link)) => Cell::link(cell.clone(), link(cell)),
                    _ => Cell::text(french(cell)),
                })
                .collect()
        })
        .collect();
    Section {
        id: id.to_owned(),
        title: title.to_owned(),
        chart,
        caption: table.caption.clone(),
        columns: table.columns.clone(),
        rows,
        empty: "Aucune donnée pour ces critères.".into(),
        ..Section::default()
    }
}

/// The page, or one of its tables as CSV when `?csv=` names it.
fn respond(user: &User, path: &str, params: &Params, mut page: Page, slug: &str) -> Response {
    for s in &mut page.sections {
        s.csv_href = Some(params.csv_href(path, &s.id));
    }
    if params.csv.is_empty() {
        return render::page(&user.viewer(), path, &page);
    }
    match page.sections.iter().find(|s| s.id == params.csv) {
        Some(s) => csv::response(&format!("{slug}-{}.csv", s.id), csv::render(&s.columns, &s.text_rows())),
        None => Failure {
            status: StatusCode::NOT_FOUND,
            message: format!("Ce tableau n'existe pas sur cette page : « {} ».", params.csv),
        }
        .page(user),
    }
}

fn pct(share: Option<f64>) -> String {
    share
        .map(|r| format!("{} %", french(&format!("{:.1}", r * 100.0))))
        .unwrap_or_else(|| "—".into())
}

fn mix_table(caption: &str, first: &str, rows: &[MixRow]) -> Table {
    let mut t = Table::new(caption, &[first, "Demandes", "Part (%)"]);
    for r in rows {
        t.push(vec![
            r.key.clone(),
            r.count.to_string(),
            r.share.map(|s| format!("{:.1}", s * 100.0)).unwrap_or_default(),
        ]);
    }
    t
}

fn mix_chart(id: &str, title: &str, rows: &[MixRow]) -> Option<String> {
    (!rows.is_empty()).then(|| {
        chart::bars(
            id,
            title,
            &rows
                .iter()
                .map(|r| {
                    let key = if r.key.is_empty() {
                        NOT_SET.to_owned()
                    } else {
                        r.key.clone()
                    };
                    (key, r.count as f64)
                })
                .collect::<Vec<_>>(),
        )
    })
}

fn granularity_label(g: Granularity) -> &'static str {
    match g {
        Granularity::Day => "jour",
        Granularity::Week => "semaine",
        Granularity::Month => "mois",
    }
}

fn milestone_label(m: &str) -> &str {
    match m {
        "acknowledgment" => "Accusé de réception",
        "take" => "Prise en charge",
        "first_answer" => "Première réponse",
        "closure" => "Clôture",
        other => other,
    }
}

fn filters(action: &str, f: &Filter, hide: &[&str]) -> Filters {
    let text = |name: &str, label: &str, value: &Option<String>, hint: &str| Field {
        name: name.into(),
        label: label.into(),
        kind: "text".into(),
        value: value.clone().unwrap_or_default(),
        hint: Some(hint.into()),
        options: vec![],
    };
    let mut fields = vec![
        Field {
            name: "from".into(),
            label: "Du".into(),
            kind: "date".into(),
            value: f.from.to_string(),
            hint: None,
            options: vec![],
        },
        Field {
            name: "to".into(),
            label: "Au".into(),
            kind: "date".into(),
            value: f.to.to_string(),
            hint: None,
            options: vec![],
        },
        Field {
            name: "granularity".into(),
            label: "Par".into(),
            kind: "select".into(),
            value: String::new(),
            hint: None,
            options: [Granularity::Day, Granularity::Week, Granularity::Month]
                .into_iter()
                .map(|g| SelectOption {
                    value: format!("{g:?}").to_lowercase(),
                    label: granularity_label(g).into(),
                    selected: g == f.granularity,
                })
                .collect(),
        },
        text("service", "Service", &f.service, "nom exact, vide : tous"),
        text("channel", "Canal", &f.channel, "web, email, desk…"),
        text("typology", "Typologie", &f.typology, "vide : toutes"),
        text("site", "Site", &f.site, "lieu d'accueil, vide : tous"),
    ];
    fields.retain(|f| !hide.contains(&f.name.as_str()));
    Filters {
        action: action.into(),
        fields,
    }
}

/// The overview's page content.
fn overview_page(title: String, intro: Option<String>, o: &Overview, action: &str, hide: &[&str]) -> Page {
    let v = &o.volumes;
    let figures = [
        ("received", "Demandes reçues", v.received.to_string()),
        ("closed", "Demandes closes", v.closed.to_string()),
        ("answered", "Premières réponses", v.answered.to_string()),
        ("backlog_open", "En cours aujourd'hui", o.backlog.open.to_string()),
        (
            "backlog_waiting",
            "En attente de l'usager",
            o.backlog.waiting_usager.to_string(),
        ),
        (
            "backlog_overdue",
            "En retard aujourd'hui",
            o.backlog.overdue.to_string(),
        ),
        (
            "within_engagement",
            "Répondues dans le délai d'engagement",
            pct(o.within_engagement.ratio()),
        ),
        (
            "within_legal",
            "Répondues dans le délai légal",
            pct(o.within_legal.ratio()),
        ),
        ("manual", "Qualifiées à la main", pct(o.manual.ratio())),
        (
            "recontacts_per_request",
            "Relances par demande",
            o.recontacts_per_request
                .map(|r| french(&format!("{r:.2}")))
                .unwrap_or_else(|| "—".into()),
        ),
    ]
    .into_iter()
    .map(|(id, label, value)| Figure {
        id: id.into(),
        label: label.into(),
        value,
    })
    .collect();

    let g = granularity_label(o.filter.granularity);
    let mut series = Table::new(
        format!("Entrées, sorties et stock par {g}"),
        &["Période (début)", "Reçues", "Closes", "Stock en fin de période"],
    );
    for p in &o.series {
        series.push(vec![
            p.start.format("%d/%m/%Y").to_string(),
            p.received.to_string(),
            p.closed.to_string(),
            p.backlog.to_string(),
        ]);
    }
    let series_chart = (!o.series.is_empty()).then(|| {
        chart::columns(
            "graphique-volumes",
            &format!("Demandes reçues par {g}"),
            &o.series
                .iter()
                .map(|p| (p.start.format("%d/%m").to_string(), p.received as f64))
                .collect::<Vec<_>>(),
        )
    });

    let mut delays = Table::new(
        "Délais depuis la réception",
        &[
            "Étape",
            "Demandes mesurées",
            "Médiane (heures)",
            "9e décile (heures)",
            "Médiane (jours ouvrés)",
            "9e décile (jours ouvrés)",
        ],
    );
    let opt = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    for d in &o.delays {
        delays.push(vec![
            milestone_label(&d.milestone).to_owned(),
            d.count.to_string(),
            opt(d.median_hours),
            opt(d.p90_hours),
            opt(d.median_business_days),
            opt(d.p90_business_days),
        ]);
    }

    let mut flows = Table::new("Autres mouvements sur la période", &["Mouvement", "Nombre"]);
    for (label, n) in [
        ("Relances (nouveau contact sur une demande existante)", v.recontacts),
        ("Transferts reçus d'un autre service", v.transfers_in),
        ("Transferts vers un autre service", v.transfers_out),
        ("Réouvertures", v.reopenings),
        ("Qualifiées à la main (aucune règle)", v.manual),
    ] {
        flows.push(vec![label.to_owned(), n.to_string()]);
    }

    let service_link = |s: &str| format!("/service/{}", urlencode(s));
    let typology_link = |s: &str| format!("/typology/{}", urlencode(s));
    let mut sections = vec![
        section("volumes", "Volumes", &series, series_chart, None),
        section("delais", "Délais", &delays, None, None),
        section(
            "canaux",
            "Canaux",
            &mix_table("Demandes reçues par canal", "Canal", &o.channels),
            mix_chart("graphique-canaux", "Demandes reçues par canal", &o.channels),
            None,
        ),
    ];
    if !hide.contains(&"typology") {
        sections.push(section(
            "typologies",
            "Typologies",
            &mix_table("Demandes reçues par typologie", "Typologie", &o.typologies),
            mix_chart("graphique-typologies", "Demandes reçues par typologie", &o.typologies),
            Some(&typology_link),
        ));
    }
    if !hide.contains(&"service") {
        sections.push(section(
            "services",
            "Services",
            &mix_table("Demandes reçues par service", "Service", &o.services),
            mix_chart("graphique-services", "Demandes reçues par service", &o.services),
            Some(&service_link),
        ));
    }
    sections.push(section(
        "mouvements",
        "Relances, transferts, réouvertures",
        &flows,
        None,
        None,
    ));
    Page {
        title,
        intro,
        filters: Some(filters(action, &o.filter, hide)),
        figures,
        sections,
    }
}

/// Percent-encodes a path segment.
fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn period_intro(f: &Filter) -> String {
    format!(
        "Du {} au {}, par {}. Les définitions des indicateurs sont dans la documentation de la console.",
        f.from.format("%d/%m/%Y"),
        f.to.format("%d/%m/%Y"),
        granularity_label(f.granularity)
    )
}

/// What an overview-shaped page counts: everything, one service or one
/// typology.
enum Scope {
    All,
    Service(String),
    Typology(String),
}

impl Scope {
    async fn query(&self, console: &crate::Console, filter: &Filter) -> Result<Overview, ConsoleError> {
        match self {
            Scope::All => console.overview(filter).await,
            Scope::Service(name) => console.service(filter, name).await,
            Scope::Typology(name) => console.typology(filter, name).await,
        }
    }

    /// (title, path, CSV file prefix, the filter fields the scope fixes)
    fn page(&self) -> (String, String, String, &'static [&'static str]) {
        match self {
            Scope::All => ("Vue d'ensemble".into(), "/".into(), "vue-ensemble".into(), &[]),
            Scope::Service(n) => (
                format!("Service « {n} »"),
                format!("/service/{}", urlencode(n)),
                format!("service-{n}"),
                &["service"],
            ),
            Scope::Typology(n) => (
                format!("Typologie « {n} »"),
                format!("/typology/{}", urlencode(n)),
                format!("typologie-{n}"),
                &["typology"],
            ),
        }
    }
}

async fn scoped_page(state: &WebState, user: &User, p: &Params, scope: Scope) -> Response {
    let result = async { Ok::<_, Failure>(scope.query(&state.console, &p.filter()?).await?) }.await;
    match result {
        Ok(o) => {
            let (title, path, slug, hide) = scope.page();
            let page = overview_page(title, Some(period_intro(&o.filter)), &o, &path, hide);
            respond(user, &path, p, page, &slug)
        }
        Err(f) => f.page(user),
    }
}

async fn scoped_api(state: &WebState, p: &Params, scope: Scope) -> Response {
    api(async { Ok(scope.query(&state.console, &p.filter()?).await?) }.await)
}

async fn overview(State(state): State<Arc<WebState>>, user: User, Query(p): Query<Params>) -> Response {
    scoped_page(&state, &user, &p, Scope::All).await
}

async fn service(
    State(state): State<Arc<WebState>>,
    user: User,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    scoped_page(&state, &user, &p, Scope::Service(name)).await
}

async fn typology(
    State(state): State<Arc<WebState>>,
    user: User,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    scoped_page(&state, &user, &p, Scope::Typology(name)).await
}

async fn api_overview(State(state): State<Arc<WebState>>, _user: User, Query(p): Query<Params>) -> Response {
    scoped_api(&state, &p, Scope::All).await
}

async fn api_service(
    State(state): State<Arc<WebState>>,
    _user: User,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    scoped_api(&state, &p, Scope::Service(name)).await
}

async fn api_typology(
    State(state): State<Arc<WebState>>,
    _user: User,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    scoped_api(&state, &p, Scope::Typology(name)).await
}

fn api<T: Serialize>(result: Result<T, Failure>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(f) => f.api(),
    }
}

fn status_label(s: &str) -> &str {
    match s {
        "open" => "ouverte",
        "taken" => "prise en charge",
        "waiting_usager" => "en attente de l'usager",
        "answered" => "répondue",
        "closed" => "close",
        "reopened" => "rouverte",
        "transferred" => "transférée",
        other => other,
    }
}

fn deadline_label(s: &str) -> &str {
    match s {
        "engagement" => "délai d'engagement",
        "legal" => "délai légal",
        other => other,
    }
}

/// An RFC 3339 instant as French local time (Europe/Paris).
fn local_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono_tz::Europe::Paris)
                .format("%d/%m/%Y %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_owned())
}

fn list_section(id: &str, title: &str, caption: &str, columns: &[&str], rows: Vec<Vec<Cell>>, empty: &str) -> Section {
    Section {
        id: id.into(),
        title: title.into(),
        caption: caption.into(),
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        rows,
        empty: empty.into(),
        ..Section::default()
    }
}

async fn overdue(State(state): State<Arc<WebState>>, user: User, Query(p): Query<Params>) -> Response {
    let result = async {
        let filter = p.filter()?;
        Ok::<_, Failure>((filter.clone(), state.console.overdue(&filter).await?))
    }
    .await;
    let (filter, rows) = match result {
        Ok(r) => r,
        Err(f) => return f.page(&user),
    };
    let f = filters("/overdue", &filter, &["from", "to", "granularity"]);
    let n = rows.len();
    let rows = rows
        .iter()
        .map(|r| {
            vec![
                Cell::text(&r.reference),
                Cell::link(&r.service, format!("/service/{}", urlencode(&r.service))),
                Cell::text(&r.typology),
                Cell::text(local_time(&r.due_at)),
                Cell::text(deadline_label(&r.deadline)),
                Cell::text(status_label(&r.status)),
            ]
        })
        .collect();
    let page = Page {
        title: "Demandes en retard".into(),
        intro: Some(format!(
            "{n} demande(s) ouvertes ou prises en charge dont un délai (engagement ou légal) est dépassé aujourd'hui, la plus en retard d'abord. Aucune donnée personnelle : la référence suffit pour retrouver la demande dans l'outil métier."
        )),
        filters: Some(f),
        figures: vec![],
        sections: vec![list_section(
            "retards",
            "Liste",
            "Demandes en retard",
            &[
                "Référence",
                "Service",
                "Typologie",
                "Échéance dépassée",
                "Délai",
                "Statut",
            ],
            rows,
            "Aucune demande en retard.",
        )],
    };
    respond(&user, "/overdue", &p, page, "retards")
}

/// A list page only ops may open: `rows` made into one table.
struct OpsList {
    path: &'static str,
    slug: &'static str,
    title: &'static str,
    intro: &'static str,
    columns: &'static [&'static str],
    empty: &'static str,
}

fn ops_list<T>(
    user: &User,
    p: &Params,
    list: OpsList,
    rows: Result<Vec<T>, ConsoleError>,
    cells: impl Fn(&T) -> Vec<Cell>,
) -> Response {
    let rows = match rows {
        Ok(rows) => rows.iter().map(cells).collect(),
        Err(e) => return Failure::from(e).page(user),
    };
    let page = Page {
        title: list.title.into(),
        intro: Some(list.intro.into()),
        sections: vec![list_section(
            list.slug,
            "Liste",
            list.title,
            list.columns,
            rows,
            list.empty,
        )],
        ..Page::default()
    };
    respond(user, list.path, p, page, list.slug)
}

async fn dead_letters(State(state): State<Arc<WebState>>, user: User, Query(p): Query<Params>) -> Response {
    if let Some(r) = user.forbidden_unless(Role::Ops) {
        return r;
    }
    let list = OpsList {
        path: "/dead-letters",
        slug: "lettres-mortes",
        title: "Lettres mortes",
        intro: "Messages que la passerelle n'a pas pu traiter, les plus récents d'abord. Les rejouer ou les écarter : `guichet deadletter`.",
        columns: &["N°", "Reçue le", "Origine", "N° d'origine", "Raison"],
        empty: "Aucune lettre morte.",
    };
    ops_list(&user, &p, list, state.console.dead_letters().await, |r| {
        vec![
            Cell::text(r.sequence.to_string()),
            Cell::text(local_time(&r.at)),
            Cell::text(format!("{} {}", r.original_stream, r.original_subject)),
            Cell::text(r.original_sequence.to_string()),
            Cell::text(&r.reason),
        ]
    })
}

async fn identity_conflicts(State(state): State<Arc<WebState>>, user: User, Query(p): Query<Params>) -> Response {
    if let Some(r) = user.forbidden_unless(Role::Ops) {
        return r;
    }
    let result = async {
        Ok::<_, ConsoleError>((
            state.console.open_identity_conflicts().await?,
            state.console.identity_conflicts().await?,
        ))
    }
    .await;
    let (open, events) = match result {
        Ok(r) => r,
        Err(e) => return Failure::from(e).page(&user),
    };
    let side = |kinds: &[String], level: &str| Cell::text(format!("{} ({level})", kinds.join(", ")));
    let open_rows = open
        .iter()
        .map(|c| {
            vec![
                Cell::text(&c.id),
                Cell::text(&c.kept),
                side(&c.kept_kinds, &c.kept_level),
                Cell::text(&c.other),
                side(&c.other_kinds, &c.other_level),
                Cell::text(local_time(&c.first_at)),
                Cell::text(local_time(&c.last_at)),
                Cell::text(c.contacts.to_string()),
                match &c.latest_contact {
                    Some(id) => Cell::link(id, format!("/explain?contact={}", urlencode(id))),
                    None => Cell::text("—"),
                },
            ]
        })
        .collect();
    let event_rows = events
        .iter()
        .map(|r| {
            vec![
                Cell::text(r.sequence.to_string()),
                Cell::text(local_time(&r.at)),
                Cell::link(&r.contact_id, format!("/explain?contact={}", urlencode(&r.contact_id))),
                Cell::text(&r.kept),
                Cell::text(&r.others),
            ]
        })
        .collect();
    let page = Page {
        title: "Conflits d'identité".into(),
        intro: Some(
            "Usagers que les identifiants d'un même contact désignaient ensemble : l'identifiant le plus fort a été retenu, \
             rien n'a été fusionné. Les conflits ouverts attendent une décision : `guichet usager resolve ID merge` \
             (une seule personne) ou `distinct` (deux personnes)."
                .into(),
        ),
        sections: vec![
            list_section(
                "ouverts",
                "Conflits ouverts",
                "Conflits d'identité ouverts, les plus anciens d'abord",
                &[
                    "Conflit",
                    "Usager retenu",
                    "Par",
                    "Autre usager",
                    "Par",
                    "Depuis",
                    "Dernier contact le",
                    "Contacts",
                    "Dernier contact",
                ],
                open_rows,
                "Aucun conflit d'identité ouvert.",
            ),
            list_section(
                "historique",
                "Historique",
                "Conflits signalés par l'aiguilleur, les plus récents d'abord",
                &["N°", "Le", "Contact", "Usager retenu", "Autres usagers"],
                event_rows,
                "Aucun conflit d'identité signalé.",
            ),
        ],
        ..Page::default()
    };
    respond(&user, "/identity-conflicts", &p, page, "conflits-identite")
}

fn revision(name: &str, value: &str) -> Result<Option<u64>, Failure> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        Failure::bad(format!(
            "Révision ({name}) : « {value} » n'est pas un numéro de révision."
        ))
    })
}

async fn rules(State(state): State<Arc<WebState>>, user: User, Query(p): Query<Params>) -> Response {
    let result = async {
        let (a, b) = (revision("a", &p.a)?, revision("b", &p.b)?);
        let revisions = state.console.rules_revisions().await?;
        let diff = match (a, b) {
            (Some(a), Some(b)) => Some(state.console.rules_diff(a, b).await?),
            (None, None) => None,
            _ => return Err(Failure::bad("Pour comparer deux révisions, donnez les deux (a et b).")),
        };
        Ok::<_, Failure>((revisions, diff))
    }
    .await;
    let (revisions, diff) = match result {
        Ok(r) => r,
        Err(f) => return f.page(&user),
    };
    let rows = revisions
        .iter()
        .map(|r| {
            let state = if r.deleted {
                "supprimée".to_owned()
            } else {
                r.invalid
                    .clone()
                    .map_or_else(|| "valide".to_owned(), |e| format!("invalide : {e}"))
            };
            vec![
                Cell::text(r.revision.to_string()),
                Cell::text(local_time(&r.pushed_at)),
                Cell::text(&r.pushed_by),
                Cell::text(&r.origin),
                Cell::text(r.sha256.chars().take(12).collect::<String>()),
                Cell::text(state),
            ]
        })
        .collect();
    let mut sections = vec![list_section(
        "revisions",
        "Révisions conservées",
        "Révisions des règles, de la plus ancienne à la plus récente",
        &[
            "Révision",
            "Publiée le",
            "Par",
            "Origine",
            "Empreinte (SHA-256)",
            "État",
        ],
        rows,
        "Aucune révision des règles n'est conservée.",
    )];
    let options: Vec<String> = revisions.iter().map(|r| r.revision.to_string()).collect();
    let pick = |name: &str, label: &str, current: &str, default: Option<&String>| Field {
        name: name.into(),
        label: label.into(),
        kind: "select".into(),
        value: String::new(),
        hint: None,
        options: options
            .iter()
            .map(|o| SelectOption {
                value: o.clone(),
                label: format!("révision {o}"),
                selected: if current.is_empty() {
                    Some(o) == default
                } else {
                    o == current
                },
            })
            .collect(),
    };
    let filters = (revisions.len() >= 2).then(|| Filters {
        action: "/rules".into(),
        fields: vec![
            pick("a", "Comparer la révision", &p.a, options.iter().rev().nth(1)),
            pick("b", "avec la révision", &p.b, options.last()),
        ],
    });
    if let Some(d) = &diff {
        let changed = d.lines.iter().filter(|l| l.op != ' ').count();
        let rows = d
            .lines
            .iter()
            .map(|l| {
                let change = match l.op {
                    '+' => "ajoutée",
                    '-' => "retirée",
                    _ => "",
                };
                vec![Cell::text(change), Cell::text(&l.text)]
            })
            .collect();
        let mut s = list_section(
            "difference",
            &format!("Différence entre les révisions {} et {}", d.from, d.to),
            &format!("Révision {} → {} : {changed} ligne(s) changée(s)", d.from, d.to),
            &["Ligne", "Texte"],
            rows,
            "Les deux révisions sont identiques.",
        );
        s.note = Some("Les lignes inchangées sont gardées pour le contexte.".into());
        sections.push(s);
    }
    let page = Page {
        title: "Révisions des règles".into(),
        intro: Some("Qui a publié quelle version des règles de qualification, et quand ; choisissez deux révisions pour voir ce qui a changé.".into()),
        filters,
        sections,
        ..Page::default()
    };
    respond(&user, "/rules", &p, page, "regles")
}

async fn explain(State(state): State<Arc<WebState>>, user: User, Query(p): Query<Params>) -> Response {
    let form = Filters {
        action: "/explain".into(),
        fields: vec![Field {
            name: "contact".into(),
            label: "Identifiant du contact".into(),
            kind: "text".into(),
            value: p.contact.clone(),
            hint: Some("tel que renvoyé à la réception (26 caractères)".into()),
            options: vec![],
        }],
    };
    let contact = p.contact.trim();
    let mut page = Page {
        title: "Expliquer un contact".into(),
        intro: Some("Pourquoi un contact est allé dans tel service, avec quelle typologie et quelle échéance : la règle et la révision des règles qui l'ont décidé.".into()),
        filters: Some(form),
        ..Page::default()
    };
    if !contact.is_empty() {
        if contact.len() > 64
            || !contact
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Failure::bad("Identifiant du contact (contact) : lettres et chiffres seulement, 64 au plus.")
                .page(&user);
        }
        let v = match state.console.explain(contact).await {
            Ok(v) => v,
            Err(e) => return Failure::from(e).page(&user),
        };
        let mut rows: Vec<Vec<Cell>> = [
            ("Référence", v.reference.clone()),
            ("Canal", v.channel.clone()),
            ("Service", v.service.clone()),
            ("Typologie", v.typology.clone()),
            (
                "Règle",
                if v.rule_id.is_empty() {
                    "aucune : qualification à la main".into()
                } else {
                    v.rule_id.clone()
                },
            ),
            ("Révision des règles", v.rules_revision.to_string()),
            ("Échéance", v.due_date.clone()),
            ("Suite de", v.follow_up_of.clone()),
            (
                "Statut de la demande",
                v.request_status.as_deref().map(status_label).unwrap_or("").to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| vec![Cell::text(k), Cell::text(v)])
        .collect();
        rows.extend(
            v.explanation
                .iter()
                .map(|l| vec![Cell::text("Pourquoi"), Cell::text(l)]),
        );
        page.sections.push(list_section(
            "explication",
            &format!("Contact {}", v.contact_id),
            &format!("Routage du contact {}", v.contact_id),
            &["Élément", "Valeur"],
            rows,
            "",
        ));
    }
    respond(&user, "/explain", &p, page, "explication")
}

async fn api_overdue(State(state): State<Arc<WebState>>, _user: User, Query(p): Query<Params>) -> Response {
    api(async { Ok(state.console.overdue(&p.filter()?).await?) }.await)
}

async fn api_dead_letters(State(state): State<Arc<WebState>>, user: User) -> Response {
    if let Some(r) = user.forbidden_unless(Role::Ops) {
        return r;
    }
    api(async { Ok(state.console.dead_letters().await?) }.await)
}

async fn api_identity_conflicts(State(state): State<Arc<WebState>>, user: User) -> Response {
    if let Some(r) = user.forbidden_unless(Role::Ops) {
        return r;
    }
    api(async {
        Ok(serde_json::json!({
            "open": state.console.open_identity_conflicts().await?,
            "events": state.console.identity_conflicts().await?,
        }))
    }
    .await)
}

async fn api_rules(State(state): State<Arc<WebState>>, _user: User, Query(p): Query<Params>) -> Response {
    api(async {
        match (revision("a", &p.a)?, revision("b", &p.b)?) {
            (Some(a), Some(b)) => Ok(serde_json::to_value(state.console.rules_diff(a, b).await?).unwrap_or_default()),
            _ => Ok(serde_json::to_value(state.console.rules_revisions().await?).unwrap_or_default()),
        }
    }
    .await)
}

async fn api_explain(State(state): State<Arc<WebState>>, _user: User, Query(p): Query<Params>) -> Response {
    api(async {
        if p.contact.trim().is_empty() {
            return Err(Failure::bad(
                "contact: the contact id to explain is missing (?contact=<id>)",
            ));
        }
        Ok(state.console.explain(p.contact.trim()).await?)
    }
    .await)
}
