//! `accepted-domains`, `inbound-connectors`, `outbound-connectors`, `rules`,
//! `detectors`: list, create, get, replace and delete, one object at a time.
//! The kinds share the handlers through [`Resource`].

use super::{AdminError, ApiState, JsonBody};
use crate::config::objects::{
    AcceptedDomain, DetectorObject, EdmObject, InboundConnectorObject, ObjectKind, ObjectSet,
    OutboundConnectorObject,
};
use crate::config::rule_object::RuleObject;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// An object kind served as a REST collection.
pub(crate) trait Resource: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Which kind.
    const KIND: ObjectKind;
    /// Words used in messages ("outbound connector").
    const NOUN: &'static str;
    /// Its objects within a set.
    fn all(set: &ObjectSet) -> &[Self];
    /// A set holding only `self`.
    fn into_set(self) -> ObjectSet;
    /// The object's name.
    fn name(&self) -> &str;
    /// Renames (the path's name wins over the body's on PUT).
    fn set_name(&mut self, name: String);
}

impl Resource for AcceptedDomain {
    const KIND: ObjectKind = ObjectKind::AcceptedDomain;
    const NOUN: &'static str = "accepted domain";
    fn all(set: &ObjectSet) -> &[Self] {
        &set.accepted_domains
    }
    fn into_set(self) -> ObjectSet {
        ObjectSet {
            accepted_domains: vec![self],
            ..ObjectSet::default()
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
}

impl Resource for InboundConnectorObject {
    const KIND: ObjectKind = ObjectKind::InboundConnector;
    const NOUN: &'static str = "inbound connector";
    fn all(set: &ObjectSet) -> &[Self] {
        &set.inbound_connectors
    }
    fn into_set(self) -> ObjectSet {
        ObjectSet {
            inbound_connectors: vec![self],
            ..ObjectSet::default()
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
}

impl Resource for OutboundConnectorObject {
    const KIND: ObjectKind = ObjectKind::OutboundConnector;
    const NOUN: &'static str = "outbound connector";
    fn all(set: &ObjectSet) -> &[Self] {
        &set.outbound_connectors
    }
    fn into_set(self) -> ObjectSet {
        ObjectSet {
            outbound_connectors: vec![self],
            ..ObjectSet::default()
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
}

impl Resource for RuleObject {
    const KIND: ObjectKind = ObjectKind::Rule;
    const NOUN: &'static str = "rule";
    fn all(set: &ObjectSet) -> &[Self] {
        &set.rules
    }
    fn into_set(self) -> ObjectSet {
        ObjectSet {
            rules: vec![self],
            ..ObjectSet::default()
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
}

impl Resource for DetectorObject {
    const KIND: ObjectKind = ObjectKind::Detector;
    const NOUN: &'static str = "detector";
    fn all(set: &ObjectSet) -> &[Self] {
        &set.detectors
    }
    fn into_set(self) -> ObjectSet {
        ObjectSet {
            detectors: vec![self],
            ..ObjectSet::default()
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
}

impl Resource for EdmObject {
    const KIND: ObjectKind = ObjectKind::Edm;
    const NOUN: &'static str = "edm set";
    fn all(set: &ObjectSet) -> &[Self] {
        &set.edm
    }
    fn into_set(self) -> ObjectSet {
        ObjectSet {
            edm: vec![self],
            ..ObjectSet::default()
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
}

/// Largest EDM set body: a million values are 16 MB of digests, 22 MB in
/// base64; four million fit.
const MAX_EDM_BODY: usize = 96 << 20;

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .merge(collection::<AcceptedDomain>("/accepted-domains"))
        .merge(collection::<InboundConnectorObject>("/inbound-connectors"))
        .merge(collection::<OutboundConnectorObject>("/outbound-connectors"))
        .merge(collection::<RuleObject>("/rules"))
        .merge(collection::<DetectorObject>("/detectors"))
        .merge(collection::<EdmObject>("/edm").layer(DefaultBodyLimit::max(MAX_EDM_BODY)))
}

fn collection<T: Resource>(path: &str) -> Router<ApiState> {
    Router::new().route(path, get(list::<T>).post(create::<T>)).route(
        &format!("{path}/{{name}}"),
        get(show::<T>).put(replace::<T>).delete(remove::<T>),
    )
}

/// Names compare case-insensitively, as [`ObjectSet::remove`] and validation do.
fn find<'a, T: Resource>(set: &'a ObjectSet, name: &str) -> Option<&'a T> {
    T::all(set).iter().find(|o| o.name().eq_ignore_ascii_case(name))
}

fn not_found<T: Resource>(name: &str) -> AdminError {
    AdminError::NotFound(format!("{} {name:?}", T::NOUN))
}

async fn list<T: Resource>(State(state): State<ApiState>) -> Result<Json<Vec<T>>, AdminError> {
    let set = state.backend.objects().await?;
    Ok(Json(T::all(&set).to_vec()))
}

async fn show<T: Resource>(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<T>, AdminError> {
    let set = state.backend.objects().await?;
    find::<T>(&set, &name)
        .cloned()
        .map(Json)
        .ok_or_else(|| not_found::<T>(&name))
}

async fn create<T: Resource>(
    State(state): State<ApiState>,
    JsonBody(object): JsonBody<T>,
) -> Result<(StatusCode, Json<T>), AdminError> {
    let new = object.clone();
    state
        .backend
        .change_objects(Box::new(move |set| {
            if let Some(existing) = find::<T>(set, new.name()) {
                return Err(AdminError::Conflict(format!("{} {:?}", T::NOUN, existing.name())));
            }
            set.merge(new.into_set(), false);
            Ok(true)
        }))
        .await?;
    Ok((StatusCode::CREATED, Json(object)))
}

async fn replace<T: Resource>(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    JsonBody(object): JsonBody<T>,
) -> Result<Json<T>, AdminError> {
    let stored = Arc::new(Mutex::new(None));
    let written = stored.clone();
    state
        .backend
        .change_objects(Box::new(move |set| {
            // The stored spelling of the name is kept, so the upsert replaces
            // the object instead of adding a second one differing only in case.
            let stored_name = find::<T>(set, &name)
                .map(|o| o.name().to_string())
                .ok_or_else(|| not_found::<T>(&name))?;
            let mut object = object;
            object.set_name(stored_name);
            *written.lock().unwrap_or_else(|e| e.into_inner()) = Some(object.clone());
            set.merge(object.into_set(), false);
            Ok(true)
        }))
        .await?;
    let object = stored.lock().unwrap_or_else(|e| e.into_inner()).take();
    object
        .map(Json)
        .ok_or_else(|| AdminError::Internal("replaced object not recorded".into()))
}

async fn remove<T: Resource>(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, AdminError> {
    if state.backend.remove(T::KIND, name.clone()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found::<T>(&name))
    }
}
