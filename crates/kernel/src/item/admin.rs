//! The content administration pages: `/admin/content` (every item as the
//! working stage sees it, filtered, sorted and paged, with bulk publish,
//! unpublish and delete through the batch operations), and the item form
//! (`/admin/content/new/{type}`, `/admin/content/{id}/edit`) generated from
//! the type's field definitions, with the item's revisions.
//!
//! The form is `multipart/form-data` (its file fields upload with it,
//! through the file subsystem's upload path) and usable without scripts:
//! "Add another" buttons post the form back with one more slot, reference
//! fields take a title, a name or an id that is resolved on save (with a
//! script, the field also offers the matches of
//! `/admin/content/references` as the editor types). Saving is [`super::create`] / [`super::update`], the
//! one write path; a refusal shows the form again with each message next
//! to its field and every value kept.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::display::{self, ShownFile};
use super::field::RefTarget;
use super::store::{self, AdminFilter};
use super::{
    Failures, FieldDef, FieldKind, Item, ItemError, ItemPatch, ItemStatus, ItemType, NewItem,
    SortKey, SortOrder,
};
use crate::db::timed;
use crate::error::{AppError, ErrorBody};
use crate::page::admin;
use crate::stage::routes::StageParams;
use crate::stage::{SelectedStage, StageId};
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(content_page))
        .routes(routes!(bulk_from_page))
        .routes(routes!(choose_type_page))
        .routes(routes!(new_item_page, create_from_page))
        .routes(routes!(edit_item_page, update_from_page))
        .routes(routes!(delete_from_page))
        .routes(routes!(reference_candidates))
}

/// The item form's routes bound their own body: the uploads in it may be
/// as large as `files.max_upload_bytes` (see `http::BodyLimit`).
pub const OWN_BODY_LIMIT: &[&str] = &["/admin/content/new/{type}", "/admin/content/{id}/edit"];

/// Items per page of the listing.
const PER_PAGE: u32 = 50;
/// Candidates `/admin/content/references` answers at most.
const CANDIDATES: usize = 20;
/// Longest text `/admin/content/references` searches for.
const CANDIDATE_QUERY_MAX: usize = 255;
/// Room for the form's text parts around its files.
const ENVELOPE: u64 = 256 * 1024;
/// Largest text part of the form.
const TEXT_PART_MAX: u64 = 64 * 1024;

const CONTENT_PERMISSIONS: &[&str] = &[
    permission::CREATE_CONTENT,
    permission::EDIT_OWN_CONTENT,
    permission::EDIT_ANY_CONTENT,
];

/// What the last action did, shown once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Created,
    Saved,
    Deleted,
    BulkStarted,
    NothingSelected,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Notice::Created => "The item was created.",
            Notice::Saved => "The item was saved.",
            Notice::Deleted => "The item was deleted.",
            Notice::BulkStarted => {
                "The bulk action was started; the list shows its effect as it runs."
            }
            Notice::NothingSelected => "Nothing was done: select items first.",
        }
    }

    fn param(self) -> &'static str {
        match self {
            Notice::Created => "created",
            Notice::Saved => "saved",
            Notice::Deleted => "deleted",
            Notice::BulkStarted => "bulk_started",
            Notice::NothingSelected => "nothing_selected",
        }
    }
}

fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    raw.parse()
        .map_err(|_| AppError::NotFound(format!("item {raw}")))
}

// ---------------------------------------------------------------- listing

/// Status filter of the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    Published,
    Unpublished,
}

/// The listing's filters, sort and page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContentQuery {
    /// Only items of this type (empty: all).
    #[serde(rename = "type", default)]
    item_type: Option<String>,
    /// Only published or unpublished items (empty: both).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(inline)]
    status: Option<StatusFilter>,
    /// Only items by the user of this name (empty: anyone).
    #[serde(default)]
    author: Option<String>,
    /// Only items whose title contains this, in any case.
    #[serde(default)]
    title: Option<String>,
    /// `1`: only items the stage changes.
    #[serde(default)]
    changed: Option<String>,
    /// `created`, `changed` (default) or `title`.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(inline)]
    sort: Option<SortKey>,
    /// `desc` (default) or `asc`.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(inline)]
    order: Option<SortOrder>,
    /// 1-based page.
    #[param(minimum = 1, maximum = 1000000)]
    page: Option<u32>,
    /// The stage to list (read by the stage selection; see `StageParams`).
    #[serde(default)]
    #[param(ignore)]
    #[allow(dead_code)]
    stage: Option<String>,
    /// What the last action did (set by the pages' own redirects).
    #[param(inline)]
    notice: Option<Notice>,
}

/// A select's empty choice ("any") is no filter.
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let raw: Option<String> = Option::deserialize(d)?;
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => T::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(s)).map(Some),
    }
}

fn blank_none(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

#[derive(Serialize)]
struct ListedRow {
    id: Uuid,
    title: String,
    type_label: String,
    status: &'static str,
    author: Option<String>,
    changed: String,
    staged: bool,
    may_edit: bool,
}

fn may_edit(account: &Account, item: &Item) -> bool {
    let own = account
        .user
        .as_ref()
        .is_some_and(|u| item.author == Some(u.id));
    account.has(permission::EDIT_ANY_CONTENT) || (own && account.has(permission::EDIT_OWN_CONTENT))
}

fn may_delete(account: &Account, item: &Item) -> bool {
    let own = account
        .user
        .as_ref()
        .is_some_and(|u| item.author == Some(u.id));
    account.has(permission::DELETE_ANY_CONTENT)
        || (own && account.has(permission::DELETE_OWN_CONTENT))
}

/// Names of users by id.
async fn user_names(state: &AppState, ids: &[Uuid]) -> Result<BTreeMap<Uuid, String>, AppError> {
    let rows: Vec<(Uuid, String)> = timed(
        "users.names",
        sqlx::query_as("SELECT id, name FROM users WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&state.db),
    )
    .await
    .map_err(ItemError::from)?;
    Ok(rows.into_iter().collect())
}

/// Every item as the selected stage sees it, with filters, sorting, paging
/// and bulk actions.
#[utoipa::path(get, path = "/admin/content", tag = "page", params(ContentQuery, StageParams),
    responses(
        (status = 200, description = "The content page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad filter, sort or page", body = ErrorBody),
        (status = 403, description = "Lacks every content permission, or may not work in the stage", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 422, description = "A bad stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn content_page(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    query: Result<Query<ContentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal_any(&account, CONTENT_PERMISSIONS) {
        return Ok(r);
    }
    let Query(q) = query?;
    let page = q.page.unwrap_or(1);
    if page == 0 || page > 1_000_000 {
        return Err(AppError::bad_request(
            "bad_page",
            "page must be between 1 and 1000000",
        ));
    }
    let types = store::list_types(&state.db).await?;
    let item_type = blank_none(q.item_type);
    if let Some(t) = &item_type
        && !types.iter().any(|x| &x.type_name == t)
    {
        return Err(AppError::bad_request(
            "bad_filter",
            format!("no item type `{t}`"),
        ));
    }
    let author_name = blank_none(q.author);
    let mut notice = q.notice.map(Notice::text).map(str::to_owned);
    let author = match &author_name {
        Some(name) => match crate::user::find_by_name(&state.db, name).await? {
            Some(u) => Some(u.id),
            None => {
                notice = Some(format!("No user is named “{name}”: nothing matches."));
                Some(Uuid::nil())
            }
        },
        None => None,
    };
    let title = blank_none(q.title);
    let changed_only = q.changed.as_deref() == Some("1") && !stage.is_live();
    let filter = AdminFilter {
        item_type: item_type.clone(),
        status: q.status.map(|s| match s {
            StatusFilter::Published => ItemStatus::Published,
            StatusFilter::Unpublished => ItemStatus::Unpublished,
        }),
        author,
        title: title.clone(),
        changed_only,
        sort: q.sort.unwrap_or(SortKey::Changed),
        order: q.order.unwrap_or(SortOrder::Desc),
        page,
        per_page: PER_PAGE,
    };
    let (rows, total) = store::admin_list(&state.db, stage.as_str(), &filter).await?;
    let authors: Vec<Uuid> = rows.iter().filter_map(|r| r.item.author).collect();
    let names = user_names(&state, &authors).await?;
    let labels: BTreeMap<&str, &str> = types
        .iter()
        .map(|t| (t.type_name.as_str(), t.label.as_str()))
        .collect();
    let listed: Vec<ListedRow> = rows
        .iter()
        .map(|r| ListedRow {
            id: r.item.id,
            title: r.item.title.clone(),
            type_label: labels
                .get(r.item.item_type.as_str())
                .map_or_else(|| r.item.item_type.clone(), |l| (*l).to_owned()),
            status: if r.item.is_published() {
                "published"
            } else {
                "unpublished"
            },
            author: r.item.author.and_then(|a| names.get(&a).cloned()),
            changed: display::readable_time(r.item.changed),
            staged: r.staged,
            may_edit: may_edit(&account, &r.item),
        })
        .collect();
    let pages = (total + i64::from(PER_PAGE) - 1) / i64::from(PER_PAGE);
    // The query string of the current filters, for the sort and page links.
    let base = filter_query([
        ("type", item_type.clone()),
        (
            "status",
            q.status.map(|s| {
                match s {
                    StatusFilter::Published => "published",
                    StatusFilter::Unpublished => "unpublished",
                }
                .to_owned()
            }),
        ),
        ("author", author_name.clone()),
        ("title", title.clone()),
        ("changed", changed_only.then(|| "1".to_owned())),
        ("stage", (!stage.is_live()).then(|| stage.to_string())),
    ]);
    let stages = if account.has(permission::EDIT_ANY_CONTENT)
        || account.has(permission::ADMINISTER_STAGES)
    {
        crate::stage::list(&state.db)
            .await?
            .into_iter()
            .map(|s| (s.id, s.label))
            .collect()
    } else {
        vec![]
    };
    let creatable: Vec<(String, String)> = if account.has(permission::CREATE_CONTENT) {
        types
            .iter()
            .map(|t| (t.type_name.clone(), t.label.clone()))
            .collect()
    } else {
        vec![]
    };
    let sort = filter.sort;
    let order = filter.order;
    let html = admin::render(
        &state,
        &account,
        "/admin/content",
        "Content",
        "admin/content.html",
        minijinja::context! {
            rows => listed,
            total => total,
            page => page,
            pages => pages,
            base => base,
            types => types.iter().map(|t| (t.type_name.clone(), t.label.clone())).collect::<Vec<_>>(),
            creatable => creatable,
            stages => stages,
            view_stage => stage.to_string(),
            f_type => item_type,
            f_status => q.status,
            f_author => author_name,
            f_title => title,
            f_changed => changed_only,
            sort => sort,
            order => order,
            bulk => stage.is_live() && (account.has(permission::EDIT_ANY_CONTENT) || account.has(permission::DELETE_ANY_CONTENT)),
            may_bulk_delete => account.has(permission::DELETE_ANY_CONTENT),
            may_bulk_status => account.has(permission::EDIT_ANY_CONTENT),
            notice => notice,
        },
    )
    .await?;
    Ok(html.into_response())
}

/// `k=v&...` of the filters that are set.
fn filter_query(pairs: [(&str, Option<String>); 6]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            out.append_pair(k, &v);
        }
    }
    out.finish()
}

/// The bulk form: `action`, and `ids` once per selected item.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BulkForm {
    /// `publish`, `unpublish` or `delete`.
    #[schema(pattern = "^(publish|unpublish|delete)$")]
    action: String,
    /// The selected items (the field repeats; none selected: nothing
    /// happens but a notice).
    ids: Option<Vec<Uuid>>,
    /// The session's CSRF token (browser sessions; a bearer token needs none).
    csrf_token: Option<String>,
}

/// Start a bulk publish, unpublish or delete of the selected live items
/// (a batch of `items.publish`, `items.unpublish` or `items.delete`); back
/// to the listing with a notice.
#[utoipa::path(post, path = "/admin/content/bulk", tag = "page",
    request_body(content = BulkForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the listing with a notice; anonymous: to the login form"),
        (status = 400, description = "An unknown action or a malformed id", body = ErrorBody),
        (status = 403, description = "Lacks the action's permission, or a missing or wrong CSRF token", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn bulk_from_page(
    State(state): State<AppState>,
    account: Account,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal_any(&account, CONTENT_PERMISSIONS) {
        return Ok(r);
    }
    let mut action = None;
    let mut ids = Vec::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        match k.as_ref() {
            "action" => action = Some(v.into_owned()),
            "ids" => ids.push(v.parse::<Uuid>().map_err(|_| {
                AppError::bad_request("bad_id", format!("`{v}` is not an item id"))
            })?),
            _ => {}
        }
    }
    let operation = match action.as_deref() {
        Some("publish") => "items.publish",
        Some("unpublish") => "items.unpublish",
        Some("delete") => "items.delete",
        other => {
            return Err(AppError::bad_request(
                "bad_action",
                format!(
                    "unknown bulk action `{}`: use publish, unpublish or delete",
                    other.unwrap_or("")
                ),
            ));
        }
    };
    if ids.is_empty() {
        return Ok(Redirect::to(&format!(
            "/admin/content?notice={}",
            Notice::NothingSelected.param()
        ))
        .into_response());
    }
    let op = crate::batch::ops::find(&state, operation)
        .await
        .ok_or_else(|| AppError::Internal(format!("the {operation} operation is missing")))?;
    account.require(&op.info().permission)?;
    let owner = account.user.as_ref().map(|u| u.id);
    crate::batch::start(
        &state,
        owner,
        crate::batch::NewBatch {
            operation: operation.to_owned(),
            params: json!({ "ids": ids }),
        },
    )
    .await?;
    Ok(Redirect::to(&format!(
        "/admin/content?notice={}",
        Notice::BulkStarted.param()
    ))
    .into_response())
}

// ---------------------------------------------------------------- the form

/// One value slot of a field in the form.
#[derive(Debug, Clone, Default, Serialize)]
struct Slot {
    /// What the input shows: the text, number or date; a reference's
    /// title or name.
    value: String,
    /// A reference's or file's id.
    id: String,
    /// A boolean's state.
    checked: bool,
    /// A file's name and URL.
    file: Option<ShownFile>,
}

/// One field of the form.
#[derive(Debug, Clone, Serialize)]
struct FormField {
    name: String,
    label: String,
    kind: &'static str,
    /// The input's type: text, number, checkbox, date, reference, file.
    input: &'static str,
    required: bool,
    /// More than one value.
    multiple: bool,
    /// At most this many values (0: no limit).
    cardinality: u32,
    max_length: Option<u32>,
    min: Option<i64>,
    max: Option<i64>,
    slots: Vec<Slot>,
    errors: Vec<String>,
    /// A reference field's target: `item`, `user` or `term`.
    target: Option<&'static str>,
}

impl FormField {
    fn can_add(&self) -> bool {
        self.multiple
            && self.input != "file"
            && (self.cardinality == 0 || (self.slots.len() as u32) < self.cardinality)
    }
}

fn input_of(kind: &FieldKind) -> &'static str {
    match kind {
        FieldKind::Text { .. } => "text",
        FieldKind::Integer { .. } => "number",
        FieldKind::Boolean => "checkbox",
        FieldKind::Date => "date",
        FieldKind::Reference { .. } => "reference",
        FieldKind::File => "file",
    }
}

fn target_of(kind: &FieldKind) -> Option<&'static str> {
    match kind {
        FieldKind::Reference { target } => Some(target_param(*target)),
        _ => None,
    }
}

/// A target as `/admin/content/references?target=` names it.
fn target_param(target: RefTarget) -> &'static str {
    match target {
        RefTarget::Item => "item",
        RefTarget::User => "user",
        RefTarget::Term => "term",
    }
}

fn blank_field(def: &FieldDef) -> FormField {
    let (max_length, min, max) = match &def.kind {
        FieldKind::Text { max_length } => (Some(max_length.unwrap_or(255)), None, None),
        FieldKind::Integer { min, max } => (None, *min, *max),
        _ => (None, None, None),
    };
    FormField {
        name: def.name.clone(),
        label: def.label.clone(),
        kind: display::kind_name(&def.kind),
        input: input_of(&def.kind),
        required: def.required,
        multiple: def.cardinality != 1,
        cardinality: def.cardinality,
        max_length,
        min,
        max,
        slots: vec![],
        errors: vec![],
        target: target_of(&def.kind),
    }
}

/// The form's fields holding `fields` (stored values).
fn fields_from_values(t: &ItemType, fields: &Value, names: &display::Names) -> Vec<FormField> {
    t.fields
        .iter()
        .map(|def| {
            let mut f = blank_field(def);
            for v in display::values_of(def, fields) {
                let inner = v.get("value");
                let slot = match &def.kind {
                    FieldKind::Text { .. } | FieldKind::Date => Slot {
                        value: inner.and_then(Value::as_str).unwrap_or("").to_owned(),
                        ..Slot::default()
                    },
                    FieldKind::Integer { .. } => Slot {
                        value: inner.map(Value::to_string).unwrap_or_default(),
                        ..Slot::default()
                    },
                    FieldKind::Boolean => Slot {
                        checked: inner.and_then(Value::as_bool) == Some(true),
                        ..Slot::default()
                    },
                    FieldKind::Reference { .. } => {
                        let shown = display::show_value(def, v, names);
                        Slot {
                            value: shown.text,
                            id: display::id_of(&def.kind, v)
                                .map(|i| i.to_string())
                                .unwrap_or_default(),
                            ..Slot::default()
                        }
                    }
                    FieldKind::File => {
                        let id = display::id_of(&def.kind, v);
                        Slot {
                            id: id.map(|i| i.to_string()).unwrap_or_default(),
                            file: id.and_then(|i| names.files.get(&i).cloned()),
                            ..Slot::default()
                        }
                    }
                };
                f.slots.push(slot);
            }
            pad(&mut f);
            f
        })
        .collect()
}

/// A field without values shows one empty input (files: the upload).
fn pad(f: &mut FormField) {
    if f.slots.is_empty() && f.input != "file" {
        f.slots.push(Slot::default());
    }
}

/// The rest of the form besides the fields.
#[derive(Debug, Clone, Serialize, Default)]
struct Basics {
    title: String,
    published: bool,
    promote: bool,
    sticky: bool,
    log: String,
}

/// A submitted form: its text parts by name (in order) and the files
/// uploaded with it.
#[derive(Debug, Default)]
struct Submitted {
    text: BTreeMap<String, Vec<String>>,
    /// Files uploaded into each field, in order.
    uploads: BTreeMap<String, Vec<ShownFile>>,
    /// Upload refusals by field.
    upload_errors: Failures,
}

impl Submitted {
    fn get(&self, name: &str) -> Option<&str> {
        self.text
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Reads the form's multipart body. Files go through the file
/// subsystem's upload path as they arrive; a refused one is reported on
/// its field and the rest of the form is still read.
async fn read_form(
    state: &AppState,
    account: &Account,
    req: Request,
) -> Result<Submitted, AppError> {
    let limit = state.files.settings().max_upload_bytes;
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            AppError::bad_request(
                "invalid_body",
                "the item form is sent as multipart/form-data",
            )
        })?;
    let whole = limit.saturating_mul(4).saturating_add(ENVELOPE);
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(whole)
            .per_field(limit.saturating_add(1).max(TEXT_PART_MAX)),
    );
    let mut multipart = multer::Multipart::with_constraints(
        req.into_body().into_data_stream(),
        boundary,
        constraints,
    );
    let owner = account.user.as_ref().map(|u| u.id);
    let mut out = Submitted::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(form_error(e)),
        };
        let name = field.name().unwrap_or("").to_owned();
        if let Some(target) = name.strip_prefix("upload.") {
            let target = target.to_owned();
            if field.file_name().is_none_or(str::is_empty) {
                // No file chosen: the browser sends an empty part.
                field.bytes().await.map_err(form_error)?;
                continue;
            }
            if !account.has(permission::UPLOAD_FILES) {
                field.bytes().await.map_err(form_error)?;
                out.upload_errors.entry(target).or_default().push(format!(
                    "uploading needs the `{}` permission",
                    permission::UPLOAD_FILES
                ));
                continue;
            }
            match crate::file::upload::store_form_part(state, field, owner).await {
                Ok(info) => out.uploads.entry(target).or_default().push(ShownFile {
                    id: info.id,
                    image: info.filemime.starts_with("image/"),
                    url: info.url,
                    filename: info.filename,
                }),
                Err(e) => {
                    let (status, _) = crate::error::HttpError::status_code(&e);
                    if status.is_server_error() {
                        return Err(e.into());
                    }
                    out.upload_errors
                        .entry(target)
                        .or_default()
                        .push(format!("the file was not stored: {e}"));
                }
            }
            continue;
        }
        let text = field.text().await.map_err(form_error)?;
        out.text.entry(name).or_default().push(text);
    }
    Ok(out)
}

fn form_error(e: multer::Error) -> AppError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            AppError::PayloadTooLarge
        }
        e => AppError::bad_request(
            "invalid_body",
            format!("the form is malformed or cut off: {e}"),
        ),
    }
}

/// The slot indexes a field's parts use, in order.
fn indexes(sub: &Submitted, field: &str) -> Vec<usize> {
    let mut out: Vec<usize> = sub
        .text
        .keys()
        .filter_map(|k| {
            let rest = k
                .strip_prefix("v.")
                .or_else(|| k.strip_prefix("id."))
                .or_else(|| k.strip_prefix("rm."))?;
            let (name, i) = rest.rsplit_once('.')?;
            (name == field).then(|| i.parse().ok()).flatten()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Finds the id of the target titled or named `name` (any case; items
/// only where `account` may see them), or taken as an id: an error naming
/// the problem when none or several are.
async fn resolve(
    state: &AppState,
    account: &Account,
    stage: &StageId,
    target: RefTarget,
    name: &str,
) -> Result<Result<Uuid, String>, AppError> {
    if let Ok(id) = name.parse::<Uuid>() {
        return Ok(Ok(id));
    }
    let (sql, what) = match target {
        RefTarget::Item => (
            "SELECT id FROM item WHERE lower(title) = lower($1) AND stage_id IN ('live', $2)
                 AND $3 AND (status = 1 OR $4 OR author = $5)
             ORDER BY id LIMIT 2",
            "item titled",
        ),
        RefTarget::User => (
            "SELECT id FROM users WHERE lower(name) = lower($1) ORDER BY id LIMIT 2",
            "user named",
        ),
        RefTarget::Term => (
            "SELECT id FROM category_tag WHERE lower(name) = lower($1) ORDER BY id LIMIT 2",
            "term named",
        ),
    };
    let mut query = sqlx::query_scalar(sql).bind(name);
    if target == RefTarget::Item {
        query = query
            .bind(stage.as_str())
            .bind(account.has(permission::ACCESS_CONTENT))
            .bind(account.has(permission::VIEW_UNPUBLISHED_CONTENT))
            .bind(account.user.as_ref().map(|u| u.id));
    }
    let found: Vec<Uuid> = timed("reference.resolve", query.fetch_all(&state.db))
        .await
        .map_err(ItemError::from)?;
    Ok(match found.as_slice() {
        [id] => Ok(*id),
        [] => Err(format!("no {what} “{name}”")),
        _ => Err(format!(
            "more than one {what} “{name}”: choose the one you mean from the suggestions, or type its id"
        )),
    })
}

/// What the form asks for: the fields as the form shows them again, the
/// field values to save (`None`: leave the field empty), and the failures
/// found before saving.
struct Read {
    fields: Vec<FormField>,
    values: Map<String, Value>,
    failures: Failures,
}

/// Reads the fields of `t` from the submission. `add` names a field that
/// gets one more (empty) slot.
async fn read_fields(
    state: &AppState,
    account: &Account,
    stage: &StageId,
    t: &ItemType,
    sub: &Submitted,
    add: Option<&str>,
) -> Result<Read, AppError> {
    let mut out = Read {
        fields: vec![],
        values: Map::new(),
        failures: Failures::new(),
    };
    let names = shown_names(state, t, sub).await?;
    for def in &t.fields {
        let mut f = blank_field(def);
        let mut values: Vec<Value> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        for i in indexes(sub, &def.name) {
            let raw = sub
                .get(&format!("v.{}.{i}", def.name))
                .unwrap_or("")
                .to_owned();
            let id = sub
                .get(&format!("id.{}.{i}", def.name))
                .unwrap_or("")
                .trim()
                .to_owned();
            let removed = sub.is_set(&format!("rm.{}.{i}", def.name));
            match &def.kind {
                FieldKind::Text { .. } => {
                    if !removed && !raw.is_empty() {
                        values.push(json!({ "value": raw }));
                    }
                    if !removed {
                        f.slots.push(Slot {
                            value: raw,
                            ..Slot::default()
                        });
                    }
                }
                FieldKind::Date => {
                    let v = raw.trim().to_owned();
                    if !removed && !v.is_empty() {
                        values.push(json!({ "value": v }));
                    }
                    if !removed {
                        f.slots.push(Slot {
                            value: v,
                            ..Slot::default()
                        });
                    }
                }
                FieldKind::Integer { .. } => {
                    let v = raw.trim().to_owned();
                    if !removed && !v.is_empty() {
                        match v.parse::<i64>() {
                            Ok(n) => values.push(json!({ "value": n })),
                            Err(_) => errors.push(format!("“{v}” is not a whole number")),
                        }
                    }
                    if !removed {
                        f.slots.push(Slot {
                            value: v,
                            ..Slot::default()
                        });
                    }
                }
                FieldKind::Boolean => {
                    let on = raw == "1";
                    if !removed {
                        values.push(json!({ "value": on }));
                        f.slots.push(Slot {
                            checked: on,
                            ..Slot::default()
                        });
                    }
                }
                FieldKind::Reference { target } => {
                    let name = raw.trim().to_owned();
                    if removed {
                        continue;
                    }
                    let mut slot = Slot {
                        value: name.clone(),
                        ..Slot::default()
                    };
                    if !name.is_empty() {
                        // The id the form showed stands while its name is
                        // unchanged; a new name is looked up.
                        let kept = id.parse::<Uuid>().ok().filter(|known| {
                            let shown = display::show_value(
                                def,
                                &json!({ "target_id": known.to_string() }),
                                &names,
                            );
                            shown.text == name
                        });
                        let found = match kept {
                            Some(k) => Ok(k),
                            None => resolve(state, account, stage, *target, &name).await?,
                        };
                        match found {
                            Ok(target_id) => {
                                slot.id = target_id.to_string();
                                values.push(json!({ "target_id": target_id.to_string() }));
                            }
                            Err(message) => errors.push(message),
                        }
                    }
                    f.slots.push(slot);
                }
                FieldKind::File => {
                    if removed {
                        continue;
                    }
                    if let Ok(file_id) = id.parse::<Uuid>() {
                        values.push(json!({ "file_id": file_id.to_string() }));
                        f.slots.push(Slot {
                            id: file_id.to_string(),
                            file: names.files.get(&file_id).cloned(),
                            ..Slot::default()
                        });
                    }
                }
            }
        }
        if def.kind == FieldKind::File {
            for up in sub.uploads.get(&def.name).into_iter().flatten() {
                if def.cardinality == 1 {
                    // A new upload replaces the single value.
                    values.clear();
                    f.slots.clear();
                }
                values.push(json!({ "file_id": up.id.to_string() }));
                f.slots.push(Slot {
                    id: up.id.to_string(),
                    file: Some(up.clone()),
                    ..Slot::default()
                });
            }
            if let Some(e) = sub.upload_errors.get(&def.name) {
                errors.extend(e.iter().cloned());
            }
        }
        if add == Some(def.name.as_str()) && f.can_add() {
            f.slots.push(Slot::default());
        }
        pad(&mut f);
        let value = if def.cardinality == 1 {
            values.into_iter().next()
        } else if values.is_empty() {
            None
        } else {
            Some(Value::Array(values))
        };
        if let Some(v) = value {
            out.values.insert(def.name.clone(), v);
        }
        if !errors.is_empty() {
            out.failures.insert(def.name.clone(), errors);
        }
        out.fields.push(f);
    }
    Ok(out)
}

/// The names and files the submitted ids (`id.{field}.{i}`) of the
/// reference and file fields of `t` name.
async fn shown_names(
    state: &AppState,
    t: &ItemType,
    sub: &Submitted,
) -> Result<display::Names, AppError> {
    let mut defs = Vec::new();
    let mut fields = Map::new();
    for def in &t.fields {
        let member = match def.kind {
            FieldKind::Reference { .. } => "target_id",
            FieldKind::File => "file_id",
            _ => continue,
        };
        let ids: Vec<Value> = indexes(sub, &def.name)
            .into_iter()
            .filter_map(|i| sub.get(&format!("id.{}.{i}", def.name)))
            .filter_map(|s| s.trim().parse::<Uuid>().ok())
            .map(|id| json!({ member: id.to_string() }))
            .collect();
        fields.insert(def.name.clone(), Value::Array(ids));
        defs.push(FieldDef {
            cardinality: 0,
            ..def.clone()
        });
    }
    Ok(display::names(state, &defs, &[&Value::Object(fields)]).await?)
}

/// Puts each failure next to its field (messages from the kernel carry
/// `[i] ` for the value they concern); the rest (title, type) are returned.
fn place_failures(fields: &mut [FormField], failures: &Failures) -> Vec<(String, String)> {
    let mut rest = Vec::new();
    for (name, messages) in failures {
        match fields.iter_mut().find(|f| &f.name == name) {
            Some(f) => {
                for m in messages {
                    let m = match m.strip_prefix('[').and_then(|r| r.split_once("] ")) {
                        Some((i, text)) => match i.parse::<usize>() {
                            Ok(i) => format!("value {}: {text}", i + 1),
                            Err(_) => m.clone(),
                        },
                        None => m.clone(),
                    };
                    if !f.errors.contains(&m) {
                        f.errors.push(m);
                    }
                }
            }
            None => {
                for m in messages {
                    rest.push((name.clone(), m.clone()));
                }
            }
        }
    }
    rest
}

/// One revision as the form lists it.
#[derive(Serialize)]
struct RevisionRow {
    created: String,
    stage: String,
    title: String,
    status: &'static str,
    author: Option<String>,
    log: String,
    current: bool,
}

/// Everything the form page shows.
struct FormPage<'a> {
    t: &'a ItemType,
    item: Option<&'a Item>,
    basics: Basics,
    fields: Vec<FormField>,
    general: Vec<(String, String)>,
    notice: Option<&'static str>,
}

async fn render_form(
    state: &AppState,
    account: &Account,
    stage: &StageId,
    page: FormPage<'_>,
) -> Result<Html<String>, AppError> {
    let revisions = match page.item {
        Some(item) => {
            let mut list = super::revisions(&state.db, item.id).await?;
            list.retain(|r| {
                StageId::parse(&r.stage_id).is_ok_and(|s| crate::stage::may_work_in(account, &s))
            });
            let authors: Vec<Uuid> = list.iter().filter_map(|r| r.author).collect();
            let names = user_names(state, &authors).await?;
            list.into_iter()
                .map(|r| RevisionRow {
                    created: display::readable_time(r.created),
                    current: Some(r.id) == item.revision_id,
                    stage: r.stage_id,
                    title: r.title,
                    status: if r.status == ItemStatus::Published {
                        "published"
                    } else {
                        "unpublished"
                    },
                    author: r.author.and_then(|a| names.get(&a).cloned()),
                    log: r.log,
                })
                .collect()
        }
        None => vec![],
    };
    let title_errors: Vec<String> = page
        .general
        .iter()
        .filter(|(k, _)| k == "title")
        .map(|(_, m)| m.clone())
        .collect();
    let other_errors: Vec<String> = page
        .general
        .iter()
        .filter(|(k, _)| k != "title")
        .map(|(k, m)| format!("{k}: {m}"))
        .collect();
    let has_errors = !page.general.is_empty() || page.fields.iter().any(|f| !f.errors.is_empty());
    let can_add: Vec<bool> = page.fields.iter().map(FormField::can_add).collect();
    let (title, action) = match page.item {
        Some(item) => (
            format!(
                "Edit {}",
                if item.title.is_empty() {
                    &page.t.label
                } else {
                    &item.title
                }
            ),
            format!("/admin/content/{}/edit", item.id),
        ),
        None => (
            format!("New {}", page.t.label),
            format!("/admin/content/new/{}", page.t.type_name),
        ),
    };
    let may_delete = page.item.is_some_and(|i| {
        may_delete(account, i) && (stage.is_live() || i.stage_id == stage.as_str())
    });
    admin::render(
        state,
        account,
        "/admin/content",
        &title,
        "admin/item_form.html",
        minijinja::context! {
            item_type => minijinja::Value::from_serialize(page.t),
            item => page.item.map(minijinja::Value::from_serialize),
            action => action,
            basics => page.basics,
            fields => page.fields,
            can_add => can_add,
            title_errors => title_errors,
            other_errors => other_errors,
            error => has_errors.then_some("The item was not saved: correct the fields marked below."),
            revisions => revisions,
            stage => stage.to_string(),
            may_delete => may_delete,
            notice => page.notice,
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormQuery {
    /// What the last action did (set by the pages' own redirects).
    #[param(inline)]
    notice: Option<Notice>,
    /// The stage (read by the stage selection; see `StageParams`).
    #[serde(default)]
    #[param(ignore)]
    #[allow(dead_code)]
    stage: Option<String>,
}

/// The item types to create an item of.
#[utoipa::path(get, path = "/admin/content/new", tag = "page",
    responses(
        (status = 200, description = "The list of types", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 403, description = "Lacks `create content`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn choose_type_page(
    State(state): State<AppState>,
    account: Account,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::CREATE_CONTENT)) {
        return Ok(r);
    }
    let types = store::list_types(&state.db).await?;
    let html = admin::render(
        &state,
        &account,
        "/admin/content",
        "New item",
        "admin/content.html",
        minijinja::context! {
            choose => true,
            creatable => types.iter().map(|t| (t.type_name.clone(), t.label.clone())).collect::<Vec<_>>(),
        },
    )
    .await?;
    Ok(html.into_response())
}

/// The form for a new item of a type.
#[utoipa::path(get, path = "/admin/content/new/{type}", tag = "page",
    params(super::routes::TypePath, FormQuery, StageParams),
    responses(
        (status = 200, description = "The item form", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `create content`, or may not work in the stage", body = ErrorBody),
        (status = 404, description = "No such type or stage", body = ErrorBody),
        (status = 422, description = "A bad stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn new_item_page(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(type_name): Path<String>,
    query: Result<Query<FormQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::CREATE_CONTENT)) {
        return Ok(r);
    }
    let Query(q) = query?;
    let t = super::get_type(&state.db, &type_name).await?;
    let fields = fields_from_values(&t, &Value::Null, &display::Names::default());
    let page = FormPage {
        t: &t,
        item: None,
        basics: Basics {
            published: true,
            ..Basics::default()
        },
        fields,
        general: vec![],
        notice: q.notice.map(Notice::text),
    };
    Ok(render_form(&state, &account, &stage, page)
        .await?
        .into_response())
}

/// Which button sent the form.
enum Op {
    Save,
    Add(String),
}

fn op_of(sub: &Submitted) -> Op {
    match sub.get("op").and_then(|o| o.strip_prefix("add:")) {
        Some(field) => Op::Add(field.to_owned()),
        None => Op::Save,
    }
}

fn basics_of(sub: &Submitted) -> Basics {
    Basics {
        title: sub.get("title").unwrap_or("").to_owned(),
        published: sub.get("status") != Some("unpublished"),
        promote: sub.is_set("promote"),
        sticky: sub.is_set("sticky"),
        log: sub.get("log").unwrap_or("").to_owned(),
    }
}

fn status_of(b: &Basics) -> ItemStatus {
    if b.published {
        ItemStatus::Published
    } else {
        ItemStatus::Unpublished
    }
}

/// The values as the kernel's strict reader takes them.
fn field_values(values: Map<String, Value>) -> Result<super::FieldValues, AppError> {
    serde_json::from_value(Value::Object(values))
        .map_err(|e| AppError::Internal(format!("form values: {e}")))
}

/// Create an item from the form (multipart, its files uploaded with it),
/// in the working stage; on to its edit page. Refused values show the
/// form again with the errors next to their fields.
#[utoipa::path(post, path = "/admin/content/new/{type}", tag = "page",
    params(super::routes::TypePath, StageParams),
    request_body(content = String, content_type = "multipart/form-data",
        description = "`csrf_token` first; `title`, `status`, `promote`, `sticky`, `log`; per field slot `v.{field}.{i}` (a value, or a reference's title or name), `id.{field}.{i}` (a reference's or file's id), `rm.{field}.{i}` (remove it), `upload.{field}` (a file); `op` = `save` or `add:{field}`"),
    responses(
        (status = 200, description = "`op=add:…`: the form again with one more slot", body = String, content_type = "text/html"),
        (status = 303, description = "Created: to its edit page; anonymous: to the login form"),
        (status = 400, description = "Not a multipart form", body = ErrorBody),
        (status = 403, description = "Lacks `create content`, may not work in the stage, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such type or stage", body = ErrorBody),
        (status = 413, description = "The form is larger than its files may be", body = ErrorBody),
        (status = 422, description = "Refused values: the form again, each error next to its field", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn create_from_page(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(type_name): Path<String>,
    req: Request,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::CREATE_CONTENT)) {
        return Ok(r);
    }
    let t = super::get_type(&state.db, &type_name).await?;
    let sub = read_form(&state, &account, req).await?;
    let basics = basics_of(&sub);
    let op = op_of(&sub);
    let add = match &op {
        Op::Add(f) => Some(f.as_str()),
        Op::Save => None,
    };
    let mut read = read_fields(&state, &account, &stage, &t, &sub, add).await?;
    if let Op::Add(_) = op {
        let page = FormPage {
            t: &t,
            item: None,
            basics,
            fields: read.fields,
            general: vec![],
            notice: None,
        };
        return Ok(render_form(&state, &account, &stage, page)
            .await?
            .into_response());
    }
    let mut failures = read.failures;
    if failures.is_empty() {
        let new = NewItem {
            item_type: t.type_name.clone(),
            title: basics.title.clone(),
            status: Some(status_of(&basics)),
            promote: basics.promote,
            sticky: basics.sticky,
            fields: field_values(std::mem::take(&mut read.values))?,
        };
        let author = account.user.as_ref().map(|u| u.id);
        match super::create(&state, &stage, author, new).await {
            Ok(item) => {
                return Ok(Redirect::to(&format!(
                    "/admin/content/{}/edit?notice={}",
                    item.id,
                    Notice::Created.param()
                ))
                .into_response());
            }
            Err(ItemError::Invalid(f)) => failures = f,
            Err(e) => return Err(e.into()),
        }
    }
    let general = place_failures(&mut read.fields, &failures);
    let page = FormPage {
        t: &t,
        item: None,
        basics,
        fields: read.fields,
        general,
        notice: None,
    };
    let html = render_form(&state, &account, &stage, page).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, html).into_response())
}

/// The item as the stage shows it to an account that may edit it.
async fn editable(
    state: &AppState,
    account: &Account,
    stage: &StageId,
    raw: &str,
) -> Result<Item, AppError> {
    let id = parse_id(raw)?;
    let item = super::load(state, stage, id)
        .await?
        .ok_or(ItemError::NotFound(id))?;
    if !super::routes::can_view(account, &item) {
        return Err(ItemError::NotFound(id).into());
    }
    if !may_edit(account, &item) {
        return Err(AppError::Forbidden(format!(
            "editing this item requires `{}`",
            permission::EDIT_ANY_CONTENT
        )));
    }
    Ok(item)
}

/// The form for an item as the working stage sees it, with its revisions.
#[utoipa::path(get, path = "/admin/content/{id}/edit", tag = "page",
    params(super::routes::ItemIdPath, FormQuery, StageParams),
    responses(
        (status = 200, description = "The item form and revisions", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "May not edit the item, or may not work in the stage", body = ErrorBody),
        (status = 404, description = "No such item or stage", body = ErrorBody),
        (status = 422, description = "A bad stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn edit_item_page(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(raw): Path<String>,
    query: Result<Query<FormQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal_any(&account, CONTENT_PERMISSIONS) {
        return Ok(r);
    }
    let Query(q) = query?;
    let item = editable(&state, &account, &stage, &raw).await?;
    let t = super::get_type(&state.db, &item.item_type).await?;
    let names = display::names(&state, &t.fields, &[&item.fields]).await?;
    let fields = fields_from_values(&t, &item.fields, &names);
    let page = FormPage {
        t: &t,
        item: Some(&item),
        basics: Basics {
            title: item.title.clone(),
            published: item.is_published(),
            promote: item.promote,
            sticky: item.sticky,
            log: String::new(),
        },
        fields,
        general: vec![],
        notice: q.notice.map(Notice::text),
    };
    Ok(render_form(&state, &account, &stage, page)
        .await?
        .into_response())
}

/// Save the form of an item in the working stage (outside live: a stage
/// revision, live untouched); back to the form with a notice. Refused
/// values show the form again with the errors next to their fields.
#[utoipa::path(post, path = "/admin/content/{id}/edit", tag = "page",
    params(super::routes::ItemIdPath, StageParams),
    request_body(content = String, content_type = "multipart/form-data",
        description = "The fields of `POST /admin/content/new/{type}`"),
    responses(
        (status = 200, description = "`op=add:…`: the form again with one more slot", body = String, content_type = "text/html"),
        (status = 303, description = "Saved: back to the form; anonymous: to the login form"),
        (status = 400, description = "Not a multipart form", body = ErrorBody),
        (status = 403, description = "May not edit the item, may not work in the stage, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such item or stage", body = ErrorBody),
        (status = 413, description = "The form is larger than its files may be", body = ErrorBody),
        (status = 422, description = "Refused values: the form again, each error next to its field", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn update_from_page(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(raw): Path<String>,
    req: Request,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal_any(&account, CONTENT_PERMISSIONS) {
        return Ok(r);
    }
    let item = editable(&state, &account, &stage, &raw).await?;
    let t = super::get_type(&state.db, &item.item_type).await?;
    let sub = read_form(&state, &account, req).await?;
    let basics = basics_of(&sub);
    let op = op_of(&sub);
    let add = match &op {
        Op::Add(f) => Some(f.as_str()),
        Op::Save => None,
    };
    let mut read = read_fields(&state, &account, &stage, &t, &sub, add).await?;
    if let Op::Add(_) = op {
        let page = FormPage {
            t: &t,
            item: Some(&item),
            basics,
            fields: read.fields,
            general: vec![],
            notice: None,
        };
        return Ok(render_form(&state, &account, &stage, page)
            .await?
            .into_response());
    }
    let mut failures = read.failures;
    if failures.is_empty() {
        // Every field of the type is in the form: one left empty is removed.
        let mut values = std::mem::take(&mut read.values);
        for def in &t.fields {
            values.entry(def.name.clone()).or_insert(Value::Null);
        }
        let patch = ItemPatch {
            title: Some(basics.title.clone()),
            status: Some(status_of(&basics)),
            promote: Some(basics.promote),
            sticky: Some(basics.sticky),
            fields: Some(field_values(values)?),
            log: Some(basics.log.clone()),
        };
        let editor = account.user.as_ref().map(|u| u.id);
        match super::update(&state, &stage, item.id, editor, patch).await {
            Ok(saved) => {
                return Ok(Redirect::to(&format!(
                    "/admin/content/{}/edit?notice={}",
                    saved.id,
                    Notice::Saved.param()
                ))
                .into_response());
            }
            Err(ItemError::Invalid(f)) => failures = f,
            Err(e) => return Err(e.into()),
        }
    }
    let general = place_failures(&mut read.fields, &failures);
    let page = FormPage {
        t: &t,
        item: Some(&item),
        basics,
        fields: read.fields,
        general,
        notice: None,
    };
    let html = render_form(&state, &account, &stage, page).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, html).into_response())
}

/// The delete form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DeleteForm {
    #[serde(default)]
    pub csrf_token: String,
}

/// Delete an item from its form (in a stage: only an item created in it);
/// to the listing with a notice. An item others reference is not deleted.
#[utoipa::path(post, path = "/admin/content/{id}/delete", tag = "page",
    params(super::routes::ItemIdPath, StageParams),
    request_body(content = DeleteForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Deleted: to the listing; anonymous: to the login form"),
        (status = 403, description = "May not delete the item, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such item or stage", body = ErrorBody),
        (status = 409, description = "Other items reference it, or it is live and the stage is not", body = ErrorBody),
        (status = 422, description = "A bad stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_from_page(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal_any(&account, CONTENT_PERMISSIONS) {
        return Ok(r);
    }
    let id = parse_id(&raw)?;
    let item = super::load(&state, &stage, id)
        .await?
        .filter(|i| super::routes::can_view(&account, i))
        .ok_or(ItemError::NotFound(id))?;
    if !may_delete(&account, &item) {
        return Err(AppError::Forbidden(format!(
            "deleting this item requires `{}`",
            permission::DELETE_ANY_CONTENT
        )));
    }
    super::delete(&state, &stage, item.id).await?;
    Ok(Redirect::to(&format!(
        "/admin/content?notice={}",
        Notice::Deleted.param()
    ))
    .into_response())
}

// ---------------------------------------------------------------- reference search

/// What `/admin/content/references` searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CandidateTarget {
    Item,
    User,
    Term,
}

/// The search of a reference field's input.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReferenceQuery {
    /// `item` (titles), `user` (names of active users) or `term` (names).
    #[param(inline)]
    target: CandidateTarget,
    /// Text the title or name contains, in any case; blank: no candidates.
    #[serde(default)]
    #[param(max_length = 255)]
    q: String,
    /// The stage whose new items count too (read by the stage selection;
    /// see `StageParams`).
    #[serde(default)]
    #[param(ignore)]
    #[allow(dead_code)]
    stage: Option<String>,
}

/// One title or name a reference field may take.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Candidate {
    pub id: Uuid,
    /// The title or name, as typed into the field.
    pub label: String,
    /// What tells candidates apart: an item's type (and `unpublished`), a
    /// term's category; empty for a user.
    pub detail: String,
}

/// The candidates of a search, best first: the exact title or name, then
/// those starting with the text, then the rest, alphabetically.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Candidates {
    /// At most 20.
    pub candidates: Vec<Candidate>,
    /// More match than are listed: type more of the title or name.
    pub more: bool,
}

/// The titles or names a reference field of the item form may take,
/// matching what the editor typed (the form's script asks as they type).
/// Items are those the account may see, live or new in the working stage.
#[utoipa::path(get, path = "/admin/content/references", tag = "page",
    params(ReferenceQuery, StageParams),
    responses(
        (status = 200, description = "The candidates", body = Candidates),
        (status = 400, description = "An unknown target, or a text longer than 255 characters", body = ErrorBody),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks every content permission, or may not work in the stage", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 422, description = "A bad stage id", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn reference_candidates(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    query: Result<Query<ReferenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    if !CONTENT_PERMISSIONS.iter().any(|p| account.has(p)) {
        account.require(permission::CREATE_CONTENT)?;
    }
    let Query(q) = query?;
    let text = q.q.trim();
    if text.chars().count() > CANDIDATE_QUERY_MAX {
        return Err(AppError::bad_request(
            "bad_query",
            format!("the text to search for is longer than {CANDIDATE_QUERY_MAX} characters"),
        ));
    }
    let mut found = if text.is_empty() {
        vec![]
    } else {
        search_candidates(&state, &account, &stage, q.target, text, CANDIDATES + 1).await?
    };
    let more = found.len() > CANDIDATES;
    found.truncate(CANDIDATES);
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(Candidates {
            candidates: found,
            more,
        }),
    )
        .into_response())
}

/// Up to `limit` targets whose title or name contains `text` (any case),
/// best first. Items only where `account` may see them.
async fn search_candidates(
    state: &AppState,
    account: &Account,
    stage: &StageId,
    target: CandidateTarget,
    text: &str,
    limit: usize,
) -> Result<Vec<Candidate>, AppError> {
    const ORDER: &str = "ORDER BY lower(label) = lower($1) DESC, strpos(lower(label), lower($1)) = 1 DESC, lower(label), id LIMIT $2";
    let sql = match target {
        CandidateTarget::Item => format!(
            "SELECT id, label, detail FROM (
                 SELECT i.id, i.title AS label,
                        COALESCE(t.label, i.type) || CASE WHEN i.status = 1 THEN '' ELSE ', unpublished' END AS detail
                 FROM item i LEFT JOIN item_type t ON t.type = i.type
                 WHERE i.stage_id IN ('live', $3) AND i.title <> ''
                   AND strpos(lower(i.title), lower($1)) > 0
                   AND $4 AND (i.status = 1 OR $5 OR i.author = $6)
             ) c {ORDER}"
        ),
        CandidateTarget::User => format!(
            "SELECT id, label, detail FROM (
                 SELECT id, name AS label, '' AS detail FROM users
                 WHERE status = 1 AND strpos(lower(name), lower($1)) > 0
             ) c {ORDER}"
        ),
        CandidateTarget::Term => format!(
            "SELECT id, label, detail FROM (
                 SELECT t.id, t.name AS label, c.label AS detail
                 FROM category_tag t JOIN category c ON c.id = t.category_id
                 WHERE strpos(lower(t.name), lower($1)) > 0
             ) c {ORDER}"
        ),
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut query = sqlx::query_as::<_, Candidate>(&sql).bind(text).bind(limit);
    if target == CandidateTarget::Item {
        query = query
            .bind(stage.as_str())
            .bind(account.has(permission::ACCESS_CONTENT))
            .bind(account.has(permission::VIEW_UNPUBLISHED_CONTENT))
            .bind(account.user.as_ref().map(|u| u.id));
    }
    let found = timed("reference.candidates", query.fetch_all(&state.db))
        .await
        .map_err(ItemError::from)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_failures_land_next_to_their_value() {
        let t: Vec<FieldDef> = serde_json::from_value(json!([
            {"name": "field_tags", "label": "Tags", "kind": "reference", "target": "term", "cardinality": 0}
        ]))
        .expect("defs");
        let mut fields = vec![blank_field(&t[0])];
        let mut failures = Failures::new();
        failures.insert(
            "field_tags".into(),
            vec!["[1] target_id must be a UUID".into()],
        );
        failures.insert("title".into(), vec!["Title must not be blank".into()]);
        let rest = place_failures(&mut fields, &failures);
        assert_eq!(fields[0].errors, ["value 2: target_id must be a UUID"]);
        assert_eq!(
            rest,
            [("title".to_owned(), "Title must not be blank".to_owned())]
        );
    }
}
