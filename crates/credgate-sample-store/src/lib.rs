//! A small credit-data store for the demo and the tests: JSON over HTTP, paginated lists, and an
//! endpoint that receives forwarded objections. It plays an upstream that credgate guards.

pub mod data;

/// The domain types, under the name the sample data has always used for them.
use credgate_types as domain;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Args, Debug, Clone)]
pub struct SampleStoreArgs {
    /// Address to listen on (IP:PORT; port 0 picks a free one, printed at start).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Seed of the synthetic data: the same seed gives the same records.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How many synthetic companies to generate.
    #[arg(long, default_value_t = 200)]
    pub entities: usize,
    /// Require `Authorization: Bearer TOKEN` from callers (credgate's store credential).
    #[arg(long, env = "CREDGATE_SAMPLE_STORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

struct Inner {
    entities: Vec<Value>,
    /// Pre-serialised records: a store answers from memory, so benchmarks measure the gateway.
    entity_bytes: HashMap<String, Bytes>,
    persons: HashMap<String, Bytes>,
    token: Option<String>,
    tickets: Mutex<HashMap<String, String>>,
}

#[derive(Clone)]
struct StoreState(Arc<Inner>);

pub struct SampleStore {
    listener: TcpListener,
    router: Router,
}

impl SampleStore {
    pub async fn bind(args: &SampleStoreArgs) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(args.listen).await?;
        Ok(Self {
            listener,
            router: router(args),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

pub fn router(args: &SampleStoreArgs) -> Router {
    let data = data::generate(args.seed, args.entities);
    let entity_bytes = data
        .entities
        .iter()
        .map(|e| {
            (
                e["uscc"].as_str().unwrap_or_default().to_string(),
                to_bytes(e),
            )
        })
        .collect();
    let persons = data
        .persons
        .iter()
        .map(|p| {
            (
                p["id_number"].as_str().unwrap_or_default().to_string(),
                to_bytes(p),
            )
        })
        .collect();
    let state = StoreState(Arc::new(Inner {
        entities: data.entities,
        entity_bytes,
        persons,
        token: args.token.clone(),
        tickets: Mutex::new(HashMap::new()),
    }));
    Router::new()
        .route("/entities", get(list_entities))
        .route("/entities/{uscc}", get(get_entity))
        .route("/persons/{id}", get(get_person))
        .route("/lists/red", get(red_list))
        .route("/lists/black", get(black_list))
        .route("/objections", post(receive_objection))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("values serialise"))
}

fn json_bytes(b: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        b,
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn require_token(State(s): State<StoreState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.0.token {
        let expected = format!("Bearer {token}");
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if given != Some(expected.as_bytes()) {
            return error(StatusCode::UNAUTHORIZED, "store credential required");
        }
    }
    next.run(req).await
}

#[derive(Deserialize)]
struct ListQuery {
    sector: Option<String>,
    region: Option<String>,
    page: Option<usize>,
    page_size: Option<usize>,
}

fn page_of(items: Vec<Value>, page: Option<usize>, size: Option<usize>) -> Response {
    let page = page.unwrap_or(1);
    let size = size.unwrap_or(20);
    if page == 0 || size == 0 || size > 100 {
        return error(
            StatusCode::BAD_REQUEST,
            "page starts at 1; page_size is 1 to 100",
        );
    }
    let total = items.len();
    let rows: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    Json(json!({"items": rows, "page": page, "page_size": size, "total": total})).into_response()
}

/// The list row of an entity: a summary; the full record is at `/entities/{uscc}`.
pub fn summary_row(e: &Value) -> Value {
    json!({
        "uscc": e["uscc"], "name": e["name"], "sector": e["sector"],
        "region": e["region"], "region_name": e["region_name"],
        "registered_capital": e["registered_capital"],
        "legal_representative": e["legal_representative"],
        "rating": e["rating"]["grade"],
        "classification_grade": e["classification_grade"],
        "red_list": e["red_list"], "black_list": e["black_list"],
        "list_entries": e["list_entries"],
    })
}

/// List rows are summaries; the full record is at `/entities/{uscc}`.
async fn list_entities(State(s): State<StoreState>, Query(q): Query<ListQuery>) -> Response {
    if let Some(sector) = &q.sector
        && !data::SECTORS.iter().any(|(k, _)| k == sector)
    {
        return error(StatusCode::BAD_REQUEST, "unknown sector");
    }
    let rows =
        s.0.entities
            .iter()
            .filter(|e| q.sector.as_ref().is_none_or(|v| e["sector"] == v.as_str()))
            .filter(|e| q.region.as_ref().is_none_or(|v| e["region"] == v.as_str()))
            .map(summary_row)
            .collect();
    page_of(rows, q.page, q.page_size)
}

async fn get_entity(State(s): State<StoreState>, Path(uscc): Path<String>) -> Response {
    match s.0.entity_bytes.get(&uscc) {
        Some(b) => json_bytes(b.clone()),
        None => error(StatusCode::NOT_FOUND, "no such entity"),
    }
}

async fn get_person(State(s): State<StoreState>, Path(id): Path<String>) -> Response {
    match s.0.persons.get(&id) {
        Some(b) => json_bytes(b.clone()),
        None => error(StatusCode::NOT_FOUND, "no such person"),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<usize>,
    page_size: Option<usize>,
}

/// Every entry of the list, removed and lapsed ones included, with its exit: the store keeps
/// the history; what is public is the gateway's to decide.
fn list_rows(s: &StoreState, list: &str, q: PageQuery) -> Response {
    let rows =
        s.0.entities
            .iter()
            .flat_map(|e| {
                e["list_entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|x| x["list"] == list)
                    .map(|x| {
                        json!({
                            "uscc": e["uscc"], "name": e["name"], "sector": e["sector"],
                            "region": e["region"], "reason": x["reason"],
                            "listed_at": x["listed_at"], "valid_until": x["valid_until"],
                            "removed_at": x["removed_at"], "exit_reason": x["exit_reason"],
                        })
                    })
            })
            .collect();
    page_of(rows, q.page, q.page_size)
}

async fn red_list(State(s): State<StoreState>, Query(q): Query<PageQuery>) -> Response {
    list_rows(&s, "red", q)
}

async fn black_list(State(s): State<StoreState>, Query(q): Query<PageQuery>) -> Response {
    list_rows(&s, "black", q)
}

/// Receives a forwarded objection. The `Idempotency-Key` header makes a redelivery the same
/// ticket, as a real store must for an at-least-once sender.
async fn receive_objection(
    State(s): State<StoreState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body must be JSON");
    };
    if !v.is_object() || v.get("record_ref").and_then(Value::as_str).is_none() {
        return error(StatusCode::BAD_REQUEST, "record_ref is required");
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut tickets = s.0.tickets.lock().unwrap_or_else(|p| p.into_inner());
    let next = tickets.len() + 1;
    let ticket = tickets
        .entry(key)
        .or_insert_with(|| format!("T-{next:06}"))
        .clone();
    (
        StatusCode::ACCEPTED,
        Json(json!({"ticket_id": ticket, "status": "received"})),
    )
        .into_response()
}
