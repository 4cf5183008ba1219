//! Replacing a store node whose disk died, while the cluster serves: real processes, the
//! `flotilla ctl` command, and a snapshot install over the Raft port.

use crate::spine::Spine;
use crate::support::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// `flotilla ctl --api ALL --token-file ADMIN ARGS...`: its JSON answer, or the error it
/// printed.
fn ctl(s: &Spine, args: &[&str]) -> Result<Value, String> {
    let apis: Vec<String> = s.api.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new(flotilla_bin())
        .args(["ctl", "--api", &apis.join(",")])
        .arg("--token-file")
        .arg(&s.tokens.admin_file)
        .args(args)
        .output()
        .map_err(|e| format!("running flotilla ctl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("ctl output: {e}"))
}

/// `r`'s value, or the processes' logs and a panic naming `what`.
fn must<T>(s: &Spine, what: &str, r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| {
        s.dump_logs();
        panic!("{what}: {e}")
    })
}

async fn digest(s: &Spine, i: usize) -> Result<(String, u64), String> {
    let v = s.api(i, "/api/v1/digest").await?;
    Ok((
        v["digest"].as_str().unwrap_or_default().to_string(),
        v["revision"].as_u64().unwrap_or(0),
    ))
}

/// A follower loses its disk and comes back empty under the same id: the leader refuses it
/// (no assertion trips, the cluster keeps taking changes), and an operator replaces it with
/// `flotilla ctl remove` / `add-learner` / `promote`; it catches up by snapshot install and
/// ends with the same state as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_store_is_refused_then_replaced_through_membership_changes() {
    let mut s = Spine::start("east");
    let served = s.serve_route("/one").await;
    let (leader, base) = (served.leader, served.base.clone());
    let victim = (0..3).find(|&i| i != leader).expect("a follower");
    let id = (victim + 1).to_string();

    // The disk dies: kill -9, wipe, start again under the same id.
    s.stores[victim].kill();
    std::fs::remove_dir_all(s.dir.path().join(format!("store{}", victim + 1))).expect("wipe");
    s.stores[victim] = s.spawn_store(victim);
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.set_route("/two");
    s.expect(
        &format!("{base}/two"),
        "a change committed while the wiped node is refused",
        |c, _| c == 200,
    )
    .await;
    assert!(s.stores[leader].is_running(), "the leader is still up");
    let leader_log = s.stores[leader].log_text();
    assert!(
        !leader_log.contains("panicked"),
        "the leader panicked:\n{leader_log}"
    );
    assert!(
        leader_log.contains("has a new data dir"),
        "the leader names the reincarnated peer:\n{leader_log}"
    );

    // The operator replaces it. The snapshot+purge makes the log it needs unavailable, so it
    // can only catch up through a snapshot install.
    let snap = must(&s, "snapshot", ctl(&s, &["snapshot", "--purge"]));
    assert!(snap["snapshotIndex"].as_u64().unwrap_or(0) > 0, "{snap}");
    let m = must(&s, "remove", ctl(&s, &["remove", "--id", &id]));
    assert!(
        !m["voters"]
            .as_array()
            .expect("voters")
            .contains(&Value::from(victim as u64 + 1)),
        "{m}"
    );
    // Promoting a node that is not a learner is refused with a reason.
    let err = ctl(&s, &["promote", "--id", &id]).expect_err("not a learner");
    assert!(err.contains("not a learner"), "{err}");
    let addr = format!("127.0.0.1:{}", s.grpc[victim]);
    must(
        &s,
        "add learner",
        ctl(&s, &["add-learner", "--id", &id, "--addr", &addr]),
    );
    eventually("the learner caught up", T, || async {
        ctl(&s, &["promote", "--id", &id]).map(|_| ())
    })
    .await;
    let m = must(&s, "members", ctl(&s, &["members"]));
    assert_eq!(m["voters"].as_array().map(Vec::len), Some(3), "{m}");

    // It holds what the others hold, and takes new changes with them.
    s.set_route("/three");
    s.expect(
        &format!("{base}/three"),
        "a change after the replacement",
        |c, _| c == 200,
    )
    .await;
    let want = eventually("every node at the same digest", T, || async {
        let mut ds = Vec::new();
        for i in 0..3 {
            ds.push(digest(&s, i).await?);
        }
        if ds.iter().all(|d| *d == ds[0]) {
            Ok(ds[0].clone())
        } else {
            Err(format!("{ds:?}"))
        }
    })
    .await;
    assert!(!want.0.is_empty());
    let replaced = s.stores[victim].log_text();
    assert!(
        replaced.contains("installed snapshot"),
        "the replaced node caught up through a snapshot:\n{replaced}"
    );
    let a = s.api(victim, "/api/v1/revision").await.expect("revision");
    let b = s.api(leader, "/api/v1/revision").await.expect("revision");
    assert_eq!(a["eventsApplied"], b["eventsApplied"], "{a} {b}");
    assert_eq!(a["lastSeq"], b["lastSeq"], "{a} {b}");
}

/// Two of three stores die: the survivor has no quorum and cannot take changes, so it stops
/// being ready (and ends its watch streams) instead of answering ready on a frozen state; when
/// a peer comes back, it is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_quorum_is_not_ready() {
    let mut s = Spine::start("east");
    let leader = s.leader().await;
    let survivor = (leader + 1) % 3;
    for i in (0..3).filter(|&i| i != survivor) {
        s.stores[i].kill();
    }
    let url = format!("http://127.0.0.1:{}/readyz", s.api[survivor]);
    let body = eventually("the survivor to turn unready", T, || async {
        let (code, body) = get(&s.http, &url).await?;
        if code == 503 {
            Ok(body)
        } else {
            Err(format!("{code} {body}"))
        }
    })
    .await;
    assert!(body.contains("no leader"), "{body}");
    let back = (survivor + 1) % 3;
    s.stores[back] = s.spawn_store(back);
    eventually("ready again with a quorum", T, || async {
        let (code, body) = get(&s.http, &url).await?;
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    })
    .await;
}
