//! Watch: a stream of newline-delimited `{"type": ..., "object": ...}` events.
//!
//! Without a resourceVersion (or with "0") the watch first replays the current objects as
//! ADDED events, then follows the store from the revision it read them at; with one it
//! resumes right after it. A compacted revision yields an ERROR event carrying a 410 Expired
//! Status, which is how client-go and the Python client know to relist. Selectors are applied
//! to both the old and the new object, so an object leaving the selection is seen as DELETED
//! and one entering it as ADDED, as kube-apiserver's watch cache does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::StatusCode;
use serde_json::{json, Value};
use skiff_store::{EventKind, StoreError};

use super::objects::{parse_resource_version, Ctx};
use super::{Api, Reply, ReplyBody};
use crate::registry::ResourceDef;
use crate::request::{Query, Representation, RequestInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::storage::Storage;
use crate::table::IncludeObject;

/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// How long a watch lasts without `timeoutSeconds` (kube-apiserver's minimum request
/// timeout).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Starts a watch and returns its streaming response.
pub(crate) async fn watch(
    api: Arc<Api>,
    def: &'static ResourceDef,
    info: RequestInfo,
    query: Query,
    representation: Representation,
) -> ApiResult<Reply> {
    let mut query = query;
    if !info.name.is_empty() {
        // /watch/.../pods/x is a watch with a name field selector.
        let selector = match query.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => format!("{s},metadata.name={}", info.name),
            None => format!("metadata.name={}", info.name),
        };
        query = Query::parse(Some(&format!(
            "{}&fieldSelector={}",
            raw_query(&query),
            form_urlencoded::byte_serialize(selector.as_bytes()).collect::<String>()
        )));
    }
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").unwrap_or(""),
        def.selectable_fields,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let namespace = (!info.namespace.is_empty()).then(|| info.namespace.clone());
    let prefix = Storage::prefix(def, namespace.as_deref());
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .non_empty("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let include = IncludeObject::parse(query.get("includeObject"));

    // Where to start, and the objects to replay first.
    // Reads need no user: the request was authorized before it got here.
    let nobody = crate::authn::UserInfo::anonymous();
    let requested = query.non_empty("resourceVersion").filter(|rv| *rv != "0");
    let (initial, start) = match requested {
        Some(rv) => (Vec::new(), parse_resource_version(rv)?),
        None => {
            let list_query = Query::parse(Some(&strip_params(
                &query,
                &["limit", "continue", "resourceVersion", "watch"],
            )));
            let ctx = Ctx {
                api: &api,
                def,
                info: &info_for_list(&info),
                query: &list_query,
                user: &nobody,
                representation: Representation::Object,
                manager: String::new(),
            };
            let (items, revision, _) = ctx.list_objects().await?;
            (items, revision)
        }
    };
    let stream = api.storage().watch(&prefix, start + 1).await?;

    let content_type = match representation {
        Representation::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
        _ => "application/json",
    };
    let (mut tx, rx) = mpsc::channel::<Bytes>(64);
    let render_info = info_for_list(&info);
    let api_task = api.clone();
    tokio::spawn(async move {
        let nobody = crate::authn::UserInfo::anonymous();
        // Every object is already in the served version: the initial list converted them,
        // `decode` below converts the store's events before selectors see them.
        let render = |kind: &str, obj: Value| -> Bytes {
            let object = match representation {
                Representation::Table if kind != "BOOKMARK" && kind != "ERROR" => {
                    let ctx = Ctx {
                        api: &api_task,
                        def,
                        info: &render_info,
                        query: &Query::default(),
                        user: &nobody,
                        representation: Representation::Table,
                        manager: String::new(),
                    };
                    ctx.table(&[obj], include, json!({}))
                }
                Representation::Metadata if kind != "BOOKMARK" && kind != "ERROR" => {
                    crate::table::partial_metadata(&obj)
                }
                _ => obj,
            };
            let mut line =
                serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
            line.push(b'\n');
            Bytes::from(line)
        };
        let selected = |obj: &Value| labels.matches(obj) && fields.matches(obj);
        for obj in initial {
            if tx.send(render("ADDED", obj)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut stream = stream;
        let mut last_revision = start;
        let mut bookmark = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmark.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = bookmark.tick(), if bookmarks => {
                    let object = json!({
                        "kind": def.kind,
                        "apiVersion": def.api_version(),
                        "metadata": {"resourceVersion": last_revision.to_string()},
                    });
                    if tx.send(render("BOOKMARK", object)).await.is_err() {
                        return;
                    }
                }
                event = stream.next() => {
                    let event = match event {
                        None => return,
                        Some(Err(StoreError::Compacted { compact_revision })) => {
                            let status = ApiError::expired(format!(
                                "too old resource version: {start} ({compact_revision})"
                            ))
                            .to_status();
                            let _ = tx.send(render("ERROR", status)).await;
                            return;
                        }
                        Some(Err(err)) => {
                            let _ = tx.send(render("ERROR", ApiError::internal(err).to_status())).await;
                            return;
                        }
                        Some(Ok(event)) => event,
                    };
                    last_revision = event.revision();
                    // A conversion that fails (a CRD's webhook) ends the watch with its error.
                    let decode = |kv: &skiff_store::KeyValue| -> Result<Option<Value>, ApiError> {
                        let Ok(mut obj) = Storage::decode(kv, event.revision()) else {
                            return Ok(None);
                        };
                        def.try_to_served(&mut obj)?;
                        Ok(Some(obj))
                    };
                    let decoded = event.prev_kv.as_ref().map(decode).transpose().and_then(|old| {
                        match event.kind {
                            EventKind::Put => Ok((old.flatten(), decode(&event.kv)?)),
                            EventKind::Delete => Ok((old.flatten(), None)),
                        }
                    });
                    let (old, new) = match decoded {
                        Ok(decoded) => decoded,
                        Err(err) => {
                            let _ = tx.send(render("ERROR", err.to_status())).await;
                            return;
                        }
                    };
                    let (kind, obj) = match event.kind {
                        EventKind::Put => {
                            let Some(new) = new else { continue };
                            let was = old.as_ref().is_some_and(&selected);
                            let is = selected(&new);
                            match (was, is) {
                                (false, true) => ("ADDED", new),
                                (true, true) => ("MODIFIED", new),
                                (true, false) => ("DELETED", new),
                                (false, false) => continue,
                            }
                        }
                        EventKind::Delete => match old {
                            Some(old) if selected(&old) => ("DELETED", old),
                            _ => continue,
                        },
                    };
                    if tx.send(render(kind, obj)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });

    let body =
        StreamBody::new(rx.map(|bytes| Ok::<_, std::convert::Infallible>(Frame::data(bytes))));
    Ok(Reply {
        status: StatusCode::OK,
        body: ReplyBody::Stream(BodyExt::boxed(body)),
        content_type: content_type.into(),
        warnings: Vec::new(),
    })
}

/// The request info of the list a watch replays.
fn info_for_list(info: &RequestInfo) -> RequestInfo {
    RequestInfo {
        name: String::new(),
        verb: "list".into(),
        ..info.clone()
    }
}

fn raw_query(query: &Query) -> String {
    strip_params(query, &[])
}

/// Re-encodes a query without some parameters.
fn strip_params(query: &Query, drop: &[&str]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for key in [
        "labelSelector",
        "fieldSelector",
        "resourceVersion",
        "timeoutSeconds",
        "allowWatchBookmarks",
        "includeObject",
        "limit",
        "continue",
        "watch",
    ] {
        if drop.contains(&key) {
            continue;
        }
        if let Some(v) = query.get(key) {
            out.append_pair(key, v);
        }
    }
    out.finish()
}
