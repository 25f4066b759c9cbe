//! The lab API server driven by the real kube 5 client and kube-runtime's `watcher`: every
//! semantic Cairn relies on (resourceVersion, conflicts, status subresource, watches and 410,
//! selectors, patches, finalizers, paging, CRDs, discovery, faults, persistence).

use std::time::Duration;

use cairn_e2e::apiserver::{LabApiServer, Options};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::json;

async fn start(options: Options) -> (LabApiServer, Client) {
    let server = LabApiServer::start(options).await.expect("server starts");
    let client = client_for(&server).await;
    (server, client)
}

async fn client_for(server: &LabApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(cfg).expect("client")
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn rv_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    meta.resource_version.as_deref().unwrap().parse().unwrap()
}

#[tokio::test]
async fn create_sets_uid_timestamp_generation_and_increasing_resource_version() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let b = cms
        .create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    assert!(a.metadata.uid.is_some());
    assert_ne!(a.metadata.uid, b.metadata.uid);
    assert!(a.metadata.creation_timestamp.is_some());
    assert_eq!(a.metadata.generation, Some(1));
    assert!(rv_of(&b.metadata) > rv_of(&a.metadata));
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.metadata.resource_version.unwrap(),
        b.metadata.resource_version.unwrap()
    );
}

#[tokio::test]
async fn stale_resource_version_update_is_409_conflict_with_status_body() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let mut newer = a.clone();
    newer.data = Some([("k".to_owned(), "w".to_owned())].into());
    cms.replace("a", &PostParams::default(), &newer)
        .await
        .unwrap();
    let err = api_error(
        cms.replace("a", &PostParams::default(), &a)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert!(err.message.contains("the object has been modified"));
}

#[tokio::test]
async fn create_of_existing_name_is_409_already_exists_and_missing_get_is_404() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let err = api_error(
        cms.create(&PostParams::default(), &cm("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    let err = api_error(cms.get("nope").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert!(cms.get_opt("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn two_clients_racing_to_replace_one_lease_exactly_one_wins() {
    let (server, c1) = start(Options::default()).await;
    let c2 = client_for(&server).await;
    let l1: Api<Lease> = Api::namespaced(c1, "kube-node-lease");
    let l2: Api<Lease> = Api::namespaced(c2, "kube-node-lease");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "node-a"}, "spec": {"holderIdentity": "nobody"}}),
    )
    .unwrap();
    l1.create(&PostParams::default(), &lease).await.unwrap();
    for round in 0..20 {
        let current = l1.get("node-a").await.unwrap();
        let mut mine = current.clone();
        let mut theirs = current.clone();
        mine.spec.as_mut().unwrap().holder_identity = Some(format!("one-{round}"));
        theirs.spec.as_mut().unwrap().holder_identity = Some(format!("two-{round}"));
        let pp = PostParams::default();
        let (a, b) = tokio::join!(
            l1.replace("node-a", &pp, &mine),
            l2.replace("node-a", &pp, &theirs)
        );
        let (winner, loser) = match (a, b) {
            (Ok(w), Err(e)) | (Err(e), Ok(w)) => (w, api_error(e)),
            (a, b) => panic!("round {round}: expected exactly one winner, got {a:?} and {b:?}"),
        };
        assert_eq!(loser.code, 409);
        let stored = l1.get("node-a").await.unwrap();
        assert_eq!(
            stored.spec.unwrap().holder_identity,
            winner.spec.unwrap().holder_identity
        );
    }
}

fn lb_service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.99"}]}}
    }))
    .unwrap()
}

#[tokio::test]
async fn status_subresource_is_isolated_both_ways_and_generation_follows_spec() {
    let (_s, client) = start(Options::default()).await;
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let created = svcs
        .create(&PostParams::default(), &lb_service("web"))
        .await
        .unwrap();
    // Status in a create is dropped, as upstream does for resources with a status subresource.
    assert!(created
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .is_none());
    let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}, "spec": {"type": "NodePort"}});
    let after_status = svcs
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&ingress))
        .await
        .unwrap();
    let ip = |s: &Service| {
        s.status
            .clone()
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()[0]
            .ip
            .clone()
    };
    assert_eq!(ip(&after_status).as_deref(), Some("192.0.2.10"));
    assert_eq!(
        after_status.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer")
    );
    assert_eq!(after_status.metadata.generation, Some(1));
    // A main-resource write carrying another status keeps the stored status.
    let mut main = after_status.clone();
    main.spec.as_mut().unwrap().load_balancer_class = Some("cairn.io/lb".into());
    main.status = lb_service("x").status;
    let after_main = svcs
        .replace("web", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(ip(&after_main).as_deref(), Some("192.0.2.10"));
    assert_eq!(after_main.metadata.generation, Some(2));
    // replace_status takes only the status.
    let mut st = after_main.clone();
    st.spec.as_mut().unwrap().load_balancer_class = None;
    st.status = lb_service("x").status;
    let after_replace_status = svcs
        .replace_status("web", &PostParams::default(), &st)
        .await
        .unwrap();
    assert_eq!(ip(&after_replace_status).as_deref(), Some("192.0.2.99"));
    assert_eq!(
        after_replace_status
            .spec
            .unwrap()
            .load_balancer_class
            .as_deref(),
        Some("cairn.io/lb")
    );
    assert_eq!(after_replace_status.metadata.generation, Some(2));
}

#[tokio::test]
async fn watch_resumes_after_resource_version_with_added_modified_deleted() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let start_rv = a.metadata.resource_version.clone().unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &start_rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match stream.try_next().await.unwrap().expect("stream open") {
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.data.unwrap()["k"].clone())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [("MODIFIED", "2".to_owned()), ("DELETED", "a".to_owned())]
    );
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_410_error_event() {
    let (_s, client) = start(Options {
        history_window: 2,
        ..Options::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    for n in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("b{n}"), json!({})))
            .await
            .unwrap();
    }
    let rv = first.metadata.resource_version.unwrap();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_sends_bookmarks_and_ends_at_timeout_seconds() {
    let (_s, client) = start(Options {
        bookmark_interval: Duration::from_millis(50),
        ..Options::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let rv = a.metadata.resource_version.clone().unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let mut bookmarks = 0;
    while let Some(ev) = stream.try_next().await.unwrap() {
        match ev {
            WatchEvent::Bookmark(b) => {
                assert_eq!(b.metadata.resource_version, rv);
                bookmarks += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        bookmarks > 0,
        "no bookmark before the 1 s timeout ended the stream"
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_list_and_watch() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    cms.create(&pp, &cm("web", json!({"app": "web", "tier": "front"})))
        .await
        .unwrap();
    cms.create(&pp, &cm("db", json!({"app": "db"})))
        .await
        .unwrap();
    cms.create(&pp, &cm("plain", json!({}))).await.unwrap();
    let names = |lp: ListParams| {
        let cms = cms.clone();
        async move {
            cms.list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(ListParams::default().labels("app=web")).await,
        ["web"]
    );
    assert_eq!(
        names(ListParams::default().labels("app!=web")).await,
        ["db", "plain"]
    );
    assert_eq!(
        names(ListParams::default().labels("app in (web,db)")).await,
        ["db", "web"]
    );
    assert_eq!(
        names(ListParams::default().labels("app notin (web)")).await,
        ["db", "plain"]
    );
    assert_eq!(names(ListParams::default().labels("tier")).await, ["web"]);
    assert_eq!(names(ListParams::default().labels("!app")).await, ["plain"]);
    assert_eq!(
        names(ListParams::default().fields("metadata.name=db")).await,
        ["db"]
    );
    let all: Api<ConfigMap> = Api::all(client);
    let in_default = all
        .list(&ListParams::default().fields("metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(in_default.items.len(), 3);
    let err = api_error(
        cms.list(&ListParams::default().fields("spec.x=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);

    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().labels("app=web").timeout(5);
    let mut stream = cms.watch(&wp, &rv).await.unwrap().boxed();
    cms.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "x"}})),
    )
    .await
    .unwrap();
    // Leaving the selector is seen as DELETED.
    cms.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .unwrap();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(o)) => assert_eq!(o.metadata.name.as_deref(), Some("web")),
        other => panic!("expected DELETED web, got {other:?}"),
    }
}

#[tokio::test]
async fn merge_json_and_strategic_patches_apply_and_stale_resource_version_in_a_patch_is_409() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let pp = PatchParams::default();
    let merged = cms
        .patch(
            "a",
            &pp,
            &Patch::Merge(json!({"data": {"k": null, "m": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        [("m".to_owned(), "1".to_owned())].into()
    );
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/n", "value": "2"}])).unwrap();
    let jp = cms.patch("a", &pp, &Patch::Json::<()>(ops)).await.unwrap();
    assert_eq!(jp.data.unwrap().get("n").map(String::as_str), Some("2"));
    let sp = cms
        .patch("a", &pp, &Patch::Strategic(json!({"data": {"o": "3"}})))
        .await
        .unwrap();
    assert_eq!(sp.data.unwrap().len(), 3);
    let stale =
        json!({"metadata": {"resourceVersion": a.metadata.resource_version}, "data": {"p": "4"}});
    let err = api_error(cms.patch("a", &pp, &Patch::Merge(stale)).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/m", "value": "nope"}]))
            .unwrap();
    let err = api_error(
        cms.patch("a", &pp, &Patch::Json::<()>(failing))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_without_field_ownership() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PatchParams::apply("test").force();
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    let created = cms.patch("ssa", &pp, &Patch::Apply(&body)).await.unwrap();
    assert_eq!(created.data.unwrap()["a"], "1");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"b": "2"}});
    let merged = cms.patch("ssa", &pp, &Patch::Apply(&body)).await.unwrap();
    assert_eq!(merged.data.unwrap().len(), 2);
}

#[tokio::test]
async fn delete_with_finalizers_waits_for_them_then_removes_the_object() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut c = cm("f", json!({}));
    c.metadata.finalizers = Some(vec!["cairn.io/test".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    let rv = cms
        .get("f")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let pending = cms.get("f").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    // Finalizers cannot grow while deleting.
    let err = api_error(
        cms.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["cairn.io/test", "x/y"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("f").await.unwrap().is_none());
    let mut types = Vec::new();
    while types.len() < 2 {
        match stream.try_next().await.unwrap().expect("open") {
            WatchEvent::Modified(_) => types.push("MODIFIED"),
            WatchEvent::Deleted(_) => types.push("DELETED"),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(types, ["MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn delete_preconditions_and_deletecollection_by_selector() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    let a = cms.create(&pp, &cm("a", json!({"x": "1"}))).await.unwrap();
    cms.create(&pp, &cm("b", json!({"x": "1"}))).await.unwrap();
    cms.create(&pp, &cm("c", json!({}))).await.unwrap();
    let dp = DeleteParams::default().preconditions(kube::api::Preconditions {
        resource_version: Some("1".into()),
        uid: None,
    });
    assert_eq!(api_error(cms.delete("a", &dp).await.unwrap_err()).code, 409);
    assert!(cms.get_opt("a").await.unwrap().is_some());
    let dp = DeleteParams::default().preconditions(kube::api::Preconditions {
        resource_version: a.metadata.resource_version.clone(),
        uid: a.metadata.uid.clone(),
    });
    cms.delete("a", &dp).await.unwrap();
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("x=1"),
    )
    .await
    .unwrap();
    let left: Vec<_> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test]
async fn create_in_a_missing_namespace_is_404_and_namespace_delete_takes_its_objects() {
    let (_s, client) = start(Options::default()).await;
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let err = api_error(
        missing
            .create(&PostParams::default(), &cm("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "nowhere"}})).unwrap(),
    )
    .await
    .unwrap();
    missing
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    nss.delete("nowhere", &DeleteParams::default())
        .await
        .unwrap();
    assert!(missing
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for n in 0..7 {
        cms.create(&PostParams::default(), &cm(&format!("c{n}"), json!({})))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|n| format!("c{n}")).collect::<Vec<_>>());
}

fn widget_crd(scope: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}
            }]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn crd_created_through_the_api_is_served_with_its_scope_status_and_discovery() {
    let (_s, client) = start(Options::default()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .create(&PostParams::default(), &widget_crd("Namespaced"))
        .await
        .unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(conditions
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True"));

    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .expect("Widget discovered");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps
        .subresources
        .iter()
        .any(|(sub, _)| sub.plural == "widgets/status" || sub.plural == "status"));
    assert!(discovery
        .resolve_gvk(&GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"))
        .is_some());

    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 1}, "status": {"ready": true}
    }))
    .unwrap();
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert!(created.data.get("status").is_none());
    let st = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}, "spec": {"size": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["ready"], true);
    assert_eq!(st.data["spec"]["size"], 1);

    let ar_ns = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let all: Api<DynamicObject> = Api::all_with(client, &ar_ns);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    // Deleting the CRD stops serving it and removes its objects.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_error(all.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
}

#[tokio::test]
async fn cluster_scoped_crd_objects_live_outside_namespaces() {
    let (_s, client) = start(Options::default()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd("Cluster"))
        .await
        .unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let w: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "c1"}}),
    )
    .unwrap();
    let created = all.create(&PostParams::default(), &w).await.unwrap();
    assert!(created.metadata.namespace.is_none());
    let namespaced: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    assert_eq!(api_error(namespaced.get("c1").await.unwrap_err()).code, 404);
}

async fn next<S: futures::Stream + Unpin>(s: &mut S) -> S::Item
where
    S::Item: std::fmt::Debug,
{
    match tokio::time::timeout(Duration::from_secs(20), s.next()).await {
        Ok(Some(ev)) => ev,
        other => panic!("stream stalled or ended: {other:?}"),
    }
}

#[tokio::test]
async fn kube_runtime_watcher_follows_changes_and_recovers_from_410() {
    // A long bookmark interval and a tiny history: a selective watcher's resume point falls out
    // of the window while other objects change, and its next re-watch gets 410.
    let (server, client) = start(Options {
        history_window: 3,
        bookmark_interval: Duration::from_secs(3600),
        ..Options::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    cms.create(&pp, &cm("w0", json!({"app": "cairn"})))
        .await
        .unwrap();
    let mut events = watcher(cms.clone(), watcher::Config::default().labels("app=cairn")).boxed();
    let mut inits = 0;
    let mut applied = Vec::new();
    // Initial list.
    loop {
        match next(&mut events).await {
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::InitApply(o)) => applied.push(o.metadata.name.unwrap()),
            Ok(watcher::Event::InitDone) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(applied, ["w0"]);
    // A live change.
    cms.create(&pp, &cm("w1", json!({"app": "cairn"})))
        .await
        .unwrap();
    match next(&mut events).await {
        Ok(watcher::Event::Apply(o)) => assert_eq!(o.metadata.name.as_deref(), Some("w1")),
        other => panic!("unexpected {other:?}"),
    }
    // Push its resume point out of the history, then cut the watch.
    for n in 0..6 {
        cms.create(&pp, &cm(&format!("other{n}"), json!({})))
            .await
            .unwrap();
    }
    let lists_before = server.request_counts().verb("list");
    server.drop_watches();
    cms.create(&pp, &cm("w2", json!({"app": "cairn"})))
        .await
        .unwrap();
    let mut relisted = Vec::new();
    let mut saw_410 = false;
    loop {
        match next(&mut events).await {
            Err(watcher::Error::WatchError(s)) if s.code == 410 => saw_410 = true,
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::InitApply(o)) => relisted.push(o.metadata.name.unwrap()),
            Ok(watcher::Event::InitDone) => break,
            other => panic!("unexpected before the re-list: {other:?}"),
        }
    }
    assert!(saw_410, "the watcher never saw the 410");
    assert_eq!(inits, 2);
    // w2 was created while the watch was cut: it is in the re-list, or (if the re-list won the
    // race with its create) the next live event.
    if relisted.len() == 2 {
        match next(&mut events).await {
            Ok(watcher::Event::Apply(o)) => relisted.push(o.metadata.name.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(relisted, ["w0", "w1", "w2"]);
    assert!(server.request_counts().verb("list") > lists_before);
}

#[tokio::test]
async fn kube_runtime_watcher_with_streaming_lists_gets_initial_events_then_changes() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    cms.create(&pp, &cm("s0", json!({}))).await.unwrap();
    let mut events = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match next(&mut events).await {
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitApply(o)) => initial.push(o.metadata.name.unwrap()),
            Ok(watcher::Event::InitDone) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, ["s0"]);
    cms.create(&pp, &cm("s1", json!({}))).await.unwrap();
    match next(&mut events).await {
        Ok(watcher::Event::Apply(o)) => assert_eq!(o.metadata.name.as_deref(), Some("s1")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn watch_object_follows_one_name_through_a_field_selector() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    let mut events = kube::runtime::watcher::watch_object(cms.clone(), "mine").boxed();
    assert!(next(&mut events).await.unwrap().is_none());
    cms.create(&pp, &cm("other", json!({}))).await.unwrap();
    cms.create(&pp, &cm("mine", json!({}))).await.unwrap();
    let seen = next(&mut events).await.unwrap().expect("mine appears");
    assert_eq!(seen.metadata.name.as_deref(), Some("mine"));
}

#[tokio::test]
async fn unreachable_server_cuts_watches_and_refuses_requests_then_recovers() {
    let (server, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    server.set_unreachable_for(Some(Duration::from_secs(30)));
    // The open watch is cut (an error or the end of the stream, never an event).
    assert!(!matches!(stream.next().await, Some(Ok(_))));
    let err = cms.get("x").await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "expected a connection error, got {err:?}"
    );
    server.set_unreachable_for(None);
    cms.create(&PostParams::default(), &cm("back", json!({})))
        .await
        .unwrap();
}

#[tokio::test]
async fn unreachable_period_ends_by_itself() {
    let (server, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    server.set_unreachable_for(Some(Duration::from_secs(1)));
    assert!(!matches!(cms.get("x").await, Err(kube::Error::Api(_))));
    // Without anyone lifting it, the server answers again (a 404 for the missing object).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match cms.get("x").await {
            Err(kube::Error::Api(s)) => break assert_eq!(s.code, 404),
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("still unreachable: {other:?}"),
        }
    }
}

#[tokio::test]
async fn latency_fault_is_recorded_and_requests_still_succeed() {
    let (server, client) = start(Options::default()).await;
    server.set_latency(Duration::from_millis(30));
    assert_eq!(server.faults().latency, Duration::from_millis(30));
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("slow", json!({})))
        .await
        .unwrap();
    server.set_latency(Duration::ZERO);
    assert_eq!(server.faults(), cairn_e2e::apiserver::Faults::default());
}

#[tokio::test]
async fn dropped_watches_end_cleanly() {
    let (server, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(server.watch_count(), 1);
    server.drop_watches();
    assert!(stream.try_next().await.unwrap().is_none());
    assert_eq!(server.watch_count(), 0);
}

async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .unwrap();
    serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap()
}

#[tokio::test]
async fn request_counts_reach_the_handle_and_the_debug_endpoint() {
    let (server, client) = start(Options::default()).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    leases.get("l").await.unwrap();
    leases.get("l").await.unwrap();
    leases.list(&ListParams::default()).await.unwrap();
    let counts = server.request_counts();
    assert_eq!(counts.get("create", "leases.coordination.k8s.io"), 1);
    assert_eq!(counts.get("get", "leases.coordination.k8s.io"), 2);
    assert_eq!(counts.verb("list"), 1);
    let doc = raw(&client, "GET", "/debug/requests", None).await;
    assert_eq!(doc["byVerb"]["get"], 2);
    assert_eq!(
        doc["byVerbResource"]["create leases.coordination.k8s.io"],
        1
    );
    assert_eq!(doc["total"], 4);
}

#[tokio::test]
async fn debug_faults_endpoint_sets_latency_and_drops_watches() {
    let (server, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let doc = raw(
        &client,
        "POST",
        "/debug/faults",
        Some(json!({"latencyMs": 20, "dropWatches": true})),
    )
    .await;
    assert_eq!(doc["latencyMs"], 20);
    assert!(stream.try_next().await.unwrap().is_none());
    assert_eq!(server.watch_count(), 0);
    let doc = raw(
        &client,
        "POST",
        "/debug/faults",
        Some(json!({"latencyMs": 0, "unreachableForMs": 200})),
    )
    .await;
    assert_eq!(doc["latencyMs"], 0);
    assert!(doc["unreachableForMs"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn state_file_persists_objects_and_resource_version_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let options = Options {
        state_file: Some(state.clone()),
        ..Options::default()
    };
    let (server, client) = start(options.clone()).await;
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &widget_crd("Namespaced"))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &cm("kept", json!({})))
        .await
        .unwrap();
    let rv = server.resource_version();
    server.shutdown().await.unwrap();

    let (server, client) = start(options).await;
    assert_eq!(server.resource_version(), rv);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert_eq!(cms.get("kept").await.unwrap().metadata.uid, a.metadata.uid);
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    assert!(widgets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    // Resuming a watch from before the restart is 410, like after a real restart.
    let mut stream = cms
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(stream.try_next().await.unwrap(), Some(WatchEvent::Error(s)) if s.code == 410)
    );
}

#[tokio::test]
async fn state_file_is_written_on_change_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (server, client) = start(Options {
        state_file: Some(state.clone()),
        ..Options::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("early", json!({})))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&state).unwrap_or_default();
        if text.contains("\"early\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "state file never got the object"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
}

#[tokio::test]
async fn dry_run_writes_are_refused_not_applied() {
    let (_s, client) = start(Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let err = api_error(cms.create(&pp, &cm("dry", json!({}))).await.unwrap_err());
    assert_eq!(err.code, 400);
    assert!(cms.get_opt("dry").await.unwrap().is_none());
}

#[tokio::test]
async fn kubeconfig_file_loads_with_read_from() {
    let (server, _client) = start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kc = Kubeconfig::read_from(&path).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(
        cfg.cluster_url.to_string().trim_end_matches('/'),
        server.url()
    );
    let client = Client::try_from(cfg).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
}

/// One raw HTTP/1.1 exchange; returns (status line and headers, lower-cased; body).
async fn raw_http(server: &LabApiServer, path: &str, accept: &str) -> (String, String) {
    use std::io::{Read, Write};
    let addr = server.addr();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: lab\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    let resp = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    })
    .await
    .unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_requests_get_legacy_json_and_openapi_v3_is_404() {
    let server = LabApiServer::start(Options::default()).await.unwrap();
    // What kubectl 1.32 sends.
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                  application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,\
                  application/json";
    let (head, body) = raw_http(&server, "/apis", accept).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert!(body.contains("\"kind\":\"APIGroupList\""), "{body}");
    let (head, body) = raw_http(&server, "/api", accept).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("\"kind\":\"APIVersions\""), "{body}");
    let (head, body) = raw_http(&server, "/readyz", "*/*").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    let (head, body) = raw_http(&server, "/openapi/v3", "application/json").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(body.contains("\"reason\":\"NotFound\""), "{body}");
}
