//! Files end to end: uploads (streamed, sniffed, refused when they lie),
//! serving (ranges, conditional requests, private access), usage by item
//! revisions on every write path, and the end of a file's life.

use std::path::{Path, PathBuf};

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::content::{PASSWORD, error_body};
use crate::harness::s3::Weed;
use crate::harness::{PATIENCE, TestApp, eventually};

/// A 1×1 PNG.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\x0f\0\0\x01\x01\0\x05\x18\xd8N\0\0\0\0IEND\xaeB`\x82";

/// One part of a hand-built multipart body.
pub struct Part<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: Vec<u8>,
}

impl<'a> Part<'a> {
    pub fn file(filename: &'a str, content_type: &'a str, body: &[u8]) -> Self {
        Self {
            name: "file",
            filename: Some(filename),
            content_type: Some(content_type),
            body: body.to_vec(),
        }
    }

    pub fn text(name: &'a str, value: &str) -> Self {
        Self {
            name,
            filename: None,
            content_type: None,
            body: value.as_bytes().to_vec(),
        }
    }
}

pub const BOUNDARY: &str = "trovato-test-boundary-7d1f";

/// The parts as a `multipart/form-data` body (names written as given, so
/// hostile file names reach the server unchanged).
pub fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        out.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{}\"", p.name).as_bytes(),
        );
        if let Some(f) = p.filename {
            out.extend_from_slice(b"; filename=\"");
            out.extend_from_slice(f.as_bytes());
            out.extend_from_slice(b"\"");
        }
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = p.content_type {
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&p.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// A kernel, an administrator with a bearer token, and an `article` type
/// with an image field and a multi-value attachments field.
pub struct Site {
    pub app: TestApp,
    pub admin: trovato::user::User,
    pub token: String,
}

impl Site {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(customise: impl FnOnce(&mut trovato::Config)) -> Self {
        let app = TestApp::spawn_with(customise, axum::Router::new()).await;
        let admin = app.sign_in_as_admin().await;
        let token = trovato::user::token::create(&app.state.db, admin.id, "files")
            .await
            .expect("token");
        let r = app
            .create_item_type(
                "article",
                json!([
                    {"name": "field_image", "label": "Image", "kind": "file"},
                    {"name": "field_attachments", "label": "Attachments", "kind": "file", "cardinality": 0},
                ]),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        Self { app, admin, token }
    }

    pub async fn upload_body(&self, token: &str, content_type: &str, body: Vec<u8>) -> Response {
        self.app
            .client
            .post(self.app.url("/file/upload"))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST /file/upload")
    }

    pub async fn upload_parts(&self, token: &str, parts: &[Part<'_>]) -> Response {
        self.upload_body(
            token,
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            multipart(parts),
        )
        .await
    }

    /// Uploads one file as the administrator; returns the 201 body.
    pub async fn upload(&self, scheme: &str, filename: &str, ct: &str, body: &[u8]) -> Value {
        let r = self
            .upload_parts(
                &self.token,
                &[Part::text("scheme", scheme), Part::file(filename, ct, body)],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "upload {filename}");
        r.json().await.expect("upload JSON")
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.app
            .client
            .request(method, self.app.url(path))
            .bearer_auth(token)
    }

    pub async fn create_article(
        &self,
        token: &str,
        fields: Value,
        stage: Option<&str>,
    ) -> Response {
        let path = crate::harness::content::staged("/api/items", stage);
        self.app
            .client
            .post(self.app.url(&path))
            .bearer_auth(token)
            .json(&json!({"type": "article", "title": "With files", "fields": fields}))
            .send()
            .await
            .expect("POST /api/items")
    }

    /// A user with `upload files`, `create content` and `edit own content`.
    pub async fn editor(&self, name: &str) -> (trovato::user::User, String) {
        let user = self.app.create_user(name, PASSWORD, false).await;
        for perm in ["upload files", "create content", "edit own content"] {
            sqlx::query("INSERT INTO role_permission (role, permission) VALUES ('authenticated', $1) ON CONFLICT DO NOTHING")
                .bind(perm)
                .execute(&self.app.state.db)
                .await
                .expect("grant");
        }
        self.app.state.permissions.invalidate_all();
        let token = trovato::user::token::create(&self.app.state.db, user.id, "editor")
            .await
            .expect("token");
        (user, token)
    }

    pub fn public_dir(&self) -> PathBuf {
        self.app.files_dir.join("public")
    }

    pub fn private_dir(&self) -> PathBuf {
        self.app.files_dir.join("private")
    }

    /// Stored objects in both schemes (the incoming area excluded).
    pub fn objects(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for root in [self.public_dir(), self.private_dir()] {
            walk(&root, &mut out);
        }
        out
    }

    pub async fn file_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM file_managed")
            .fetch_one(&self.app.state.db)
            .await
            .expect("count")
    }

    pub async fn status_of(&self, id: &str) -> Option<i16> {
        sqlx::query_scalar("SELECT status FROM file_managed WHERE id = $1::uuid")
            .bind(id)
            .fetch_optional(&self.app.state.db)
            .await
            .expect("status")
    }

    /// Where file `info` (an upload response) is on disk.
    pub async fn object_path(&self, id: &str) -> PathBuf {
        let (uri, scheme): (String, String) =
            sqlx::query_as("SELECT uri, scheme FROM file_managed WHERE id = $1::uuid")
                .bind(id)
                .fetch_one(&self.app.state.db)
                .await
                .expect("uri");
        let key = uri.split_once("://").expect("uri").1.to_owned();
        let root = if scheme == "public" {
            self.public_dir()
        } else {
            self.private_dir()
        };
        root.join(key)
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == ".incoming") {
                // Temporary files of writes in progress: must be empty too.
                out.extend(
                    std::fs::read_dir(&p)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                );
            } else {
                walk(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_sniffed_stored_and_served_with_ranges_and_validators() {
    let site = Site::new().await;
    let info = site.upload("public", "pixel.png", "image/png", PNG).await;
    assert_eq!(info["filemime"], "image/png");
    assert_eq!(info["filename"], "pixel.png");
    assert_eq!(info["filesize"], PNG.len());
    assert_eq!(info["status"], "temporary");
    assert_eq!(info["scheme"], "public");
    let url = info["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with("/files/") && url.ends_with(".png"), "{url}");
    let on_disk = site.object_path(&id_of(&info)).await;
    assert_eq!(std::fs::read(&on_disk).expect("object on disk"), PNG);

    let r = site.app.get(&url).await;
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h["cache-control"]
            .to_str()
            .expect("ascii")
            .contains("immutable")
    );
    assert!(
        h["content-disposition"]
            .to_str()
            .expect("ascii")
            .starts_with("inline;")
    );
    assert!(h.contains_key("last-modified"));
    let etag = h["etag"].to_str().expect("etag").to_owned();
    assert_eq!(
        etag,
        format!("\"{}\"", info["sha256"].as_str().expect("sha"))
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), PNG);

    // The same through /file/{id}.
    let by_id = site.app.get(&format!("/file/{}", id_of(&info))).await;
    assert_eq!(by_id.status(), StatusCode::OK);
    assert_eq!(by_id.bytes().await.expect("body").as_ref(), PNG);

    let cached = site
        .app
        .client
        .get(site.app.url(&url))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert!(cached.bytes().await.expect("body").is_empty());

    let ranged = site
        .app
        .client
        .get(site.app.url(&url))
        .header("range", "bytes=1-3")
        .send()
        .await
        .expect("range GET");
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 1-3/{}", PNG.len()).as_str()
    );
    assert_eq!(ranged.bytes().await.expect("body").as_ref(), b"PNG");

    let outside = site
        .app
        .client
        .get(site.app.url(&url))
        .header("range", "bytes=5000-")
        .send()
        .await
        .expect("range GET");
    assert_eq!(
        outside.headers()["content-range"],
        format!("bytes */{}", PNG.len()).as_str()
    );
    error_body(
        outside,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
    )
    .await;

    // A stale If-Range gets the whole file.
    let stale = site
        .app
        .client
        .get(site.app.url(&url))
        .header("range", "bytes=1-3")
        .header("if-range", "\"something-else\"")
        .send()
        .await
        .expect("if-range GET");
    assert_eq!(stale.status(), StatusCode::OK);

    let meta = site
        .api(
            reqwest::Method::GET,
            &format!("/api/files/{}", id_of(&info)),
            &site.token,
        )
        .await
        .send()
        .await
        .expect("meta");
    assert_eq!(meta.status(), StatusCode::OK);
    let meta: Value = meta.json().await.expect("meta JSON");
    assert_eq!(meta["usage"], json!([]));

    let health: Value = site.app.get("/health").await.json().await.expect("health");
    assert_eq!(health["checks"]["storage"]["status"], "ok", "{health}");
}

/// An upload that must be refused: what it is, its body, and the answer.
struct Refused {
    what: &'static str,
    content_type: String,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
}

fn refused(what: &'static str, parts: &[Part], status: StatusCode, code: &'static str) -> Refused {
    Refused {
        what,
        content_type: format!("multipart/form-data; boundary={BOUNDARY}"),
        body: multipart(parts),
        status,
        code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_a_4xx_and_leave_no_object_and_no_row() {
    const LIMIT: u64 = 64 * 1024;
    let site = Site::with(|c| c.files.max_upload_bytes = LIMIT).await;
    let long_name = format!("{}.png", "n".repeat(10_000));
    let polyglot = [
        PNG,
        b"....<script>alert(document.domain)</script>".as_slice(),
    ]
    .concat();
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
    let html = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>";
    let over = vec![b'a'; LIMIT as usize + 1];
    let mut cut = multipart(&[Part::file("cut.txt", "text/plain", &vec![b'x'; 20_000])]);
    cut.truncate(10_000);

    let bad = StatusCode::BAD_REQUEST;
    let unsupported = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    let cases = vec![
        refused(
            "dot-dot path",
            &[Part::file("../../etc/passwd", "text/plain", b"x")],
            bad,
            "invalid_filename",
        ),
        refused(
            "encoded dot-dot",
            &[Part::file("..%2f..%2fetc%2fpasswd", "text/plain", b"x")],
            bad,
            "invalid_filename",
        ),
        refused(
            "absolute path",
            &[Part::file("/etc/passwd", "text/plain", b"x")],
            bad,
            "invalid_filename",
        ),
        refused(
            "windows path",
            &[Part::file("C:\\x\\evil.txt", "text/plain", b"x")],
            bad,
            "invalid_filename",
        ),
        refused(
            "10 000 characters",
            &[Part::file(&long_name, "image/png", PNG)],
            bad,
            "invalid_filename",
        ),
        refused(
            "RTL override",
            &[Part::file("invoice\u{202E}gnp.exe", "image/png", PNG)],
            bad,
            "invalid_filename",
        ),
        refused(
            "HTML declared as PNG",
            &[Part::file("x.png", "image/png", html)],
            unsupported,
            "file_type_not_allowed",
        ),
        refused(
            "SVG with a script",
            &[Part::file("x.svg", "image/svg+xml", svg)],
            unsupported,
            "file_type_not_allowed",
        ),
        refused(
            "PNG that is also HTML",
            &[Part::file("x.png", "image/png", &polyglot)],
            unsupported,
            "file_type_mismatch",
        ),
        refused(
            "PNG named .html",
            &[Part::file("x.html", "image/png", PNG)],
            unsupported,
            "file_type_mismatch",
        ),
        refused(
            "PNG declared as a PDF",
            &[Part::file("x.png", "application/pdf", PNG)],
            unsupported,
            "file_type_mismatch",
        ),
        refused(
            "zero bytes",
            &[Part::file("empty.txt", "text/plain", b"")],
            bad,
            "empty_file",
        ),
        refused(
            "limit + 1 bytes",
            &[Part::file("big.txt", "text/plain", &over)],
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
        ),
        refused(
            "two files",
            &[
                Part::file("a.txt", "text/plain", b"a"),
                Part::file("b.txt", "text/plain", b"b"),
            ],
            bad,
            "bad_upload",
        ),
        refused(
            "no file part",
            &[Part::text("scheme", "public")],
            bad,
            "bad_upload",
        ),
        refused(
            "an unknown part",
            &[
                Part::text("title", "x"),
                Part::file("a.txt", "text/plain", b"a"),
            ],
            bad,
            "bad_upload",
        ),
        refused(
            "a bad scheme",
            &[
                Part::text("scheme", "ftp"),
                Part::file("a.txt", "text/plain", b"a"),
            ],
            bad,
            "bad_upload",
        ),
        Refused {
            what: "a body cut off mid-file",
            content_type: format!("multipart/form-data; boundary={BOUNDARY}"),
            body: cut,
            status: bad,
            code: "bad_upload",
        },
        Refused {
            what: "no boundary",
            content_type: "multipart/form-data".into(),
            body: multipart(&[Part::file("a.txt", "text/plain", b"a")]),
            status: bad,
            code: "bad_upload",
        },
        Refused {
            what: "not multipart",
            content_type: "application/json".into(),
            body: b"{\"file\": \"x\"}".to_vec(),
            status: bad,
            code: "bad_upload",
        },
    ];
    for case in cases {
        let r = site
            .upload_body(&site.token, &case.content_type, case.body)
            .await;
        assert_eq!(r.status(), case.status, "{}", case.what);
        let body: Value = r.json().await.expect("JSON error body");
        assert_eq!(body["error"], case.code, "{}: {body}", case.what);
        assert_eq!(site.file_rows().await, 0, "{} left a row", case.what);
        assert_eq!(
            site.objects(),
            Vec::<PathBuf>::new(),
            "{} left an object",
            case.what
        );
    }

    // A NUL in the name: refused whether the multipart parser or the name
    // check sees it first.
    let r = site
        .upload_parts(&site.token, &[Part::file("a\0b.txt", "text/plain", b"x")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(site.file_rows().await, 0);

    // Exactly the limit is fine; the stored name gets the sniffed extension.
    let at_limit = vec![b'a'; LIMIT as usize];
    let ok = site
        .upload("private", "notes", "text/plain", &at_limit)
        .await;
    assert_eq!(ok["filesize"], LIMIT);
    assert_eq!(ok["filename"], "notes.txt");
    assert_eq!(ok["filemime"], "text/plain");
    assert_eq!(site.objects().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploading_needs_the_permission_and_a_session_needs_the_csrf_token() {
    let site = Site::new().await;
    let body = multipart(&[Part::file("a.txt", "text/plain", b"hello")]);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");

    let anonymous = crate::harness::client()
        .post(site.app.url("/file/upload"))
        .header("content-type", &ct)
        .body(body.clone())
        .send()
        .await
        .expect("anonymous upload");
    error_body(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;

    let plain = site.app.create_user("reader", PASSWORD, false).await;
    let token = trovato::user::token::create(&site.app.state.db, plain.id, "r")
        .await
        .expect("token");
    let r = site.upload_body(&token, &ct, body.clone()).await;
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;

    // The administrator's session, without and with its token.
    let no_token = site
        .app
        .client
        .post(site.app.url("/file/upload"))
        .header("content-type", &ct)
        .body(body)
        .send()
        .await
        .expect("session upload");
    error_body(no_token, StatusCode::FORBIDDEN, "csrf_token_missing").await;
    assert_eq!(site.file_rows().await, 0);

    let with_token = site
        .app
        .client
        .post(site.app.url("/file/upload"))
        .header("content-type", &ct)
        .body(multipart(&[
            Part::text("csrf_token", &site.app.csrf_token()),
            Part::file("a.txt", "text/plain", b"hello"),
        ]))
        .send()
        .await
        .expect("session upload");
    assert_eq!(with_token.status(), StatusCode::CREATED);
    assert_eq!(site.file_rows().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_saves_record_usage_make_files_permanent_and_deletes_remove_them() {
    let site = Site::new().await;
    let image = site.upload("public", "a.png", "image/png", PNG).await;
    let doc = site
        .upload("private", "b.txt", "text/plain", b"attachment")
        .await;
    let (image_id, doc_id) = (id_of(&image), id_of(&doc));

    let r = site
        .create_article(
            &site.token,
            json!({
                "field_image": {"file_id": image_id},
                "field_attachments": [{"file_id": doc_id}, {"file_id": image_id}],
            }),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let item: Value = r.json().await.expect("item");
    let item_id = id_of(&item);
    assert_eq!(site.status_of(&image_id).await, Some(1));
    assert_eq!(site.status_of(&doc_id).await, Some(1));
    let uses: i64 = sqlx::query_scalar("SELECT count(*) FROM file_usage WHERE item_id = $1::uuid")
        .bind(&item_id)
        .fetch_one(&site.app.state.db)
        .await
        .expect("count");
    assert_eq!(uses, 3, "image in two fields, doc in one");

    // A second revision without the doc: the first revision still uses it.
    let r = site
        .api(
            reqwest::Method::PUT,
            &format!("/api/items/{item_id}"),
            &site.token,
        )
        .await
        .json(&json!({"fields": {"field_attachments": null}}))
        .send()
        .await
        .expect("update");
    assert_eq!(r.status(), StatusCode::OK);
    let meta: Value = site
        .api(
            reqwest::Method::GET,
            &format!("/api/files/{doc_id}"),
            &site.token,
        )
        .await
        .send()
        .await
        .expect("meta")
        .json()
        .await
        .expect("meta JSON");
    assert_eq!(meta["status"], "permanent");
    assert_eq!(meta["usage"].as_array().map(Vec::len), Some(1), "{meta}");
    assert_eq!(meta["usage"][0]["field"], "field_attachments");

    // Referenced: deleting the file is refused and nothing goes.
    let r = site
        .api(
            reqwest::Method::DELETE,
            &format!("/api/files/{doc_id}"),
            &site.token,
        )
        .await
        .send()
        .await
        .expect("delete");
    error_body(r, StatusCode::CONFLICT, "file_in_use").await;
    let doc_path = site.object_path(&doc_id).await;
    let image_path = site.object_path(&image_id).await;
    assert!(doc_path.is_file());

    // Deleting the item: both files lose their last use; rows and objects go.
    let r = site
        .api(
            reqwest::Method::DELETE,
            &format!("/api/items/{item_id}"),
            &site.token,
        )
        .await
        .send()
        .await
        .expect("delete item");
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(site.status_of(&doc_id).await, None);
    assert_eq!(site.status_of(&image_id).await, None);
    assert!(!doc_path.exists() && !image_path.exists());
    let r = site.app.get(image["url"].as_str().expect("url")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_referencing_a_missing_or_foreign_file_is_a_422_naming_the_fields() {
    let site = Site::new().await;
    let (_, editor_token) = site.editor("editor").await;
    let admins_upload = site.upload("public", "a.png", "image/png", PNG).await;
    let missing = Uuid::now_v7();
    let r = site
        .create_article(
            &editor_token,
            json!({
                "field_image": {"file_id": id_of(&admins_upload)},
                "field_attachments": [{"file_id": missing.to_string()}],
            }),
            None,
        )
        .await;
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields = body["details"]["fields"].as_object().expect("fields");
    assert!(fields.contains_key("field_image"), "{body}");
    assert!(fields.contains_key("field_attachments"), "{body}");
    // Nothing was written: no item, the upload still temporary.
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM item")
        .fetch_one(&site.app.state.db)
        .await
        .expect("count");
    assert_eq!(items, 0);
    assert_eq!(site.status_of(&id_of(&admins_upload)).await, Some(0));

    // The editor's own upload is fine.
    let own = crate::harness::content::expect_json(
        site.upload_parts(&editor_token, &[Part::file("mine.png", "image/png", PNG)])
            .await,
        StatusCode::CREATED,
    )
    .await;
    let r = site
        .create_article(
            &editor_token,
            json!({"field_image": {"file_id": id_of(&own)}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(site.status_of(&id_of(&own)).await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_files_are_served_only_to_those_who_may_see_an_item_using_them() {
    let site = Site::new().await;
    let (_, other_token) = site.editor("other").await;
    let secret = site
        .upload("private", "secret.txt", "text/plain", b"private words")
        .await;
    let secret_id = id_of(&secret);
    let path = format!("/file/{secret_id}");
    assert_eq!(secret["url"], path.as_str());
    // The object is outside the public root.
    assert!(
        site.object_path(&secret_id)
            .await
            .starts_with(site.private_dir())
    );

    let anonymous = || crate::harness::client().get(site.app.url(&path)).send();
    let as_other = || {
        site.app
            .client
            .get(site.app.url(&path))
            .bearer_auth(&other_token)
            .send()
    };
    // Temporary: only its owner.
    error_body(
        anonymous().await.expect("GET"),
        StatusCode::NOT_FOUND,
        "file_not_found",
    )
    .await;
    error_body(
        as_other().await.expect("GET"),
        StatusCode::NOT_FOUND,
        "file_not_found",
    )
    .await;
    let own = site
        .api(reqwest::Method::GET, &path, &site.token)
        .await
        .send()
        .await
        .expect("GET");
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(own.headers()["cache-control"], "private, no-cache");

    // Used by an unpublished item: still hidden from others.
    let r = site
        .app
        .client
        .post(site.app.url("/api/items"))
        .bearer_auth(&site.token)
        .json(
            &json!({"type": "article", "title": "Draft", "status": "unpublished",
                      "fields": {"field_attachments": [{"file_id": secret_id}]}}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let item: Value = r.json().await.expect("item");
    error_body(
        anonymous().await.expect("GET"),
        StatusCode::NOT_FOUND,
        "file_not_found",
    )
    .await;

    // Published live: anyone who may access content.
    let r = site
        .api(
            reqwest::Method::PUT,
            &format!("/api/items/{}", id_of(&item)),
            &site.token,
        )
        .await
        .json(&json!({"status": "published"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), StatusCode::OK);
    let r = anonymous().await.expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").as_ref(), b"private words");
    assert_eq!(as_other().await.expect("GET").status(), StatusCode::OK);

    // A private file is never reachable by a public URL.
    let key = site.object_path(&secret_id).await;
    let name = key
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let shard: Vec<String> = key
        .parent()
        .into_iter()
        .flat_map(|p| p.iter().rev().take(2))
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let public = format!("/files/{}/{}/{name}", shard[1], shard[0]);
    assert_eq!(site.app.get(&public).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_used_only_in_a_stage_is_hidden_from_live_readers_and_publish_keeps_its_usage() {
    let site = Site::new().await;
    assert_eq!(
        site.app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    let r = site.create_article(&site.token, json!({}), None).await;
    let item: Value = r.json().await.expect("item");
    let item_id = id_of(&item);
    let staged_file = site
        .upload("private", "plan.txt", "text/plain", b"stage plan")
        .await;
    let staged_id = id_of(&staged_file);
    let r = site
        .api(
            reqwest::Method::PUT,
            &format!("/api/items/{item_id}?stage=draft"),
            &site.token,
        )
        .await
        .json(&json!({"fields": {"field_attachments": [{"file_id": staged_id}]}}))
        .send()
        .await
        .expect("stage edit");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        site.status_of(&staged_id).await,
        Some(1),
        "a stage revision makes it permanent"
    );
    let stage_of_use: String = sqlx::query_scalar(
        "SELECT r.stage_id FROM file_usage u JOIN item_revision r ON r.id = u.revision_id WHERE u.file_id = $1::uuid",
    )
    .bind(&staged_id)
    .fetch_one(&site.app.state.db)
    .await
    .expect("usage");
    assert_eq!(stage_of_use, "draft");
    let path = format!("/file/{staged_id}");
    let anonymous = crate::harness::client()
        .get(site.app.url(&path))
        .send()
        .await
        .expect("GET");
    error_body(anonymous, StatusCode::NOT_FOUND, "file_not_found").await;

    assert_eq!(
        site.app.publish_stage("draft").await.status(),
        StatusCode::OK
    );
    let live: Value = site
        .app
        .read_item(&item_id, None)
        .await
        .json()
        .await
        .expect("live item");
    assert_eq!(
        live["fields"]["field_attachments"][0]["file_id"],
        staged_id.as_str()
    );
    let anonymous = crate::harness::client()
        .get(site.app.url(&path))
        .send()
        .await
        .expect("GET");
    assert_eq!(anonymous.status(), StatusCode::OK, "published live now");
    assert_eq!(site.status_of(&staged_id).await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_expired_uploads_but_never_one_a_save_is_making_permanent() {
    let site = Site::new().await;
    let state = &site.app.state;
    let claimed = site.upload("public", "claimed.png", "image/png", PNG).await;
    let expired = site.upload("public", "old.png", "image/png", PNG).await;
    let fresh = site.upload("public", "fresh.png", "image/png", PNG).await;
    let (claimed_id, expired_id, fresh_id) = (id_of(&claimed), id_of(&expired), id_of(&fresh));
    sqlx::query(
        "UPDATE file_managed SET changed = now() - interval '7 hours' WHERE id = ANY($1::uuid[])",
    )
    .bind(vec![claimed_id.clone(), expired_id.clone()])
    .execute(&state.db)
    .await
    .expect("age");
    let expired_path = site.object_path(&expired_id).await;

    // An item save that references `claimed` is in its transaction when
    // cleanup runs: cleanup must pass over it.
    let mut tx = state.db.begin().await.expect("begin");
    let mut effects = trovato::item::Effects::default();
    let new: trovato::item::NewItem = serde_json::from_value(json!({
        "type": "article", "title": "Claims a file",
        "fields": {"field_image": {"file_id": claimed_id}},
    }))
    .expect("new item");
    trovato::item::write::apply(
        state,
        &mut tx,
        trovato::item::Write::Create {
            stage: trovato::stage::StageId::live(),
            author: Some(site.admin.id),
            new,
        },
        &mut effects,
    )
    .await
    .expect("apply");
    let report = trovato::file::usage::cleanup(state).await.expect("cleanup");
    assert_eq!(report.expired, 1, "only the unclaimed expired upload");
    assert_eq!(report.purged, 1);
    trovato::item::write::commit(state, tx, effects)
        .await
        .expect("commit");
    assert_eq!(site.status_of(&claimed_id).await, Some(1));
    assert_eq!(site.status_of(&expired_id).await, None);
    assert!(!expired_path.exists());
    assert_eq!(
        site.status_of(&fresh_id).await,
        Some(0),
        "younger than the age"
    );
    let again = trovato::file::usage::cleanup(state).await.expect("cleanup");
    assert_eq!(again, trovato::file::usage::CleanupReport::default());

    // The other order: cleanup released a file, then a save references it.
    let late = site.upload("public", "late.png", "image/png", PNG).await;
    sqlx::query("UPDATE file_managed SET changed = now() - interval '7 hours' WHERE id = $1::uuid")
        .bind(id_of(&late))
        .execute(&state.db)
        .await
        .expect("age");
    let report = trovato::file::usage::cleanup(state).await.expect("cleanup");
    assert_eq!(report.expired, 1);
    let r = site
        .create_article(
            &site.token,
            json!({"field_image": {"file_id": id_of(&late)}}),
            None,
        )
        .await;
    error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_interrupted_before_the_purge_is_never_served_and_cleanup_finishes_it() {
    let site = Site::new().await;
    let f = site.upload("public", "a.png", "image/png", PNG).await;
    let id = id_of(&f);
    let path = site.object_path(&id).await;
    // As if the process died after the release committed.
    sqlx::query("UPDATE file_managed SET status = 2 WHERE id = $1::uuid")
        .bind(&id)
        .execute(&site.app.state.db)
        .await
        .expect("release");
    assert!(path.exists());
    let url = f["url"].as_str().expect("url");
    assert_eq!(site.app.get(url).await.status(), StatusCode::NOT_FOUND);
    let owner = site
        .api(reqwest::Method::GET, &format!("/file/{id}"), &site.token)
        .await
        .send()
        .await
        .expect("GET");
    assert_eq!(owner.status(), StatusCode::NOT_FOUND);
    let report = trovato::file::usage::cleanup(&site.app.state)
        .await
        .expect("cleanup");
    assert_eq!(report.purged, 1);
    assert!(!path.exists());
    assert_eq!(site.file_rows().await, 0);

    // A row whose object vanished behind the kernel's back is a 404, not an empty 200.
    let g = site.upload("public", "b.png", "image/png", PNG).await;
    std::fs::remove_file(site.object_path(&id_of(&g)).await).expect("remove object");
    let r = site.app.get(g["url"].as_str().expect("url")).await;
    error_body(r, StatusCode::NOT_FOUND, "file_not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_delete_their_temporary_uploads_and_only_administrators_permanent_ones() {
    let site = Site::new().await;
    let (_, editor_token) = site.editor("editor").await;
    let mine = crate::harness::content::expect_json(
        site.upload_parts(
            &editor_token,
            &[Part::file("mine.txt", "text/plain", b"mine")],
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let theirs = site
        .upload("public", "admin.txt", "text/plain", b"admin's")
        .await;
    let mine_path = site.object_path(&id_of(&mine)).await;

    // Someone else's file does not exist, as far as the editor can tell.
    let r = site
        .api(
            reqwest::Method::DELETE,
            &format!("/api/files/{}", id_of(&theirs)),
            &editor_token,
        )
        .await
        .send()
        .await
        .expect("delete");
    error_body(r, StatusCode::NOT_FOUND, "file_not_found").await;
    let r = site
        .api(
            reqwest::Method::GET,
            &format!("/api/files/{}", id_of(&theirs)),
            &editor_token,
        )
        .await
        .send()
        .await
        .expect("meta");
    error_body(r, StatusCode::NOT_FOUND, "file_not_found").await;
    let r = site
        .api(reqwest::Method::GET, "/api/files/not-a-uuid", &editor_token)
        .await
        .send()
        .await
        .expect("meta");
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;

    let r = site
        .api(
            reqwest::Method::DELETE,
            &format!("/api/files/{}", id_of(&mine)),
            &editor_token,
        )
        .await
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(site.status_of(&id_of(&mine)).await, None);
    assert!(!mine_path.exists());

    // Permanent but unused (its item's revision went): administrators only.
    let kept = crate::harness::content::expect_json(
        site.upload_parts(
            &editor_token,
            &[Part::file("kept.txt", "text/plain", b"kept")],
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    sqlx::query("UPDATE file_managed SET status = 1 WHERE id = $1::uuid")
        .bind(id_of(&kept))
        .execute(&site.app.state.db)
        .await
        .expect("permanent");
    let r = site
        .api(
            reqwest::Method::DELETE,
            &format!("/api/files/{}", id_of(&kept)),
            &editor_token,
        )
        .await
        .send()
        .await
        .expect("delete");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = site
        .api(
            reqwest::Method::DELETE,
            &format!("/api/files/{}", id_of(&kept)),
            &site.token,
        )
        .await
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(site.status_of(&id_of(&kept)).await, None);

    let anonymous = crate::harness::client()
        .delete(site.app.url(&format!("/api/files/{}", id_of(&theirs))))
        .send()
        .await
        .expect("delete");
    error_body(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_s3_uploads_stream_to_the_bucket_and_presigned_private_urls_expire() {
    let weed = Weed::start().await;
    let mut files = weed.settings();
    files.s3_presign_secs = 1;
    let site = Site::with(move |c| c.files = files).await;
    let public = site.upload("public", "a.png", "image/png", PNG).await;
    let r = site.app.get(public["url"].as_str().expect("url")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").as_ref(), PNG);
    assert!(site.objects().is_empty(), "nothing on the local disk");

    let private = site
        .upload("private", "s.txt", "text/plain", b"in the bucket")
        .await;
    let r = site
        .api(
            reqwest::Method::GET,
            &format!("/file/{}", id_of(&private)),
            &site.token,
        )
        .await
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let signed = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(signed.starts_with(&weed.endpoint), "{signed}");
    let plain = reqwest::Client::new();
    let first = plain.get(&signed).send().await.expect("signed GET");
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.bytes().await.expect("body").as_ref(),
        b"in the bucket"
    );
    let expired = eventually(PATIENCE, || async {
        plain
            .get(&signed)
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::FORBIDDEN)
    })
    .await;
    assert!(expired.is_some(), "the presigned URL never expired");
    // Without the signature the bucket serves nothing.
    let unsigned = signed.split('?').next().expect("url");
    assert_eq!(
        plain.get(unsigned).send().await.expect("GET").status(),
        StatusCode::FORBIDDEN
    );
    let anonymous = crate::harness::client()
        .get(site.app.url(&format!("/file/{}", id_of(&private))))
        .send()
        .await
        .expect("GET");
    error_body(anonymous, StatusCode::NOT_FOUND, "file_not_found").await;
}
