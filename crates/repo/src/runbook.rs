//! Recovery runbooks for OpenShift, filled in for one cluster: the documented procedures as
//! numbered commands, with Quorum's commands where the repository takes the place of a copied
//! directory or an upload script.
//!
//! * [`openshift_quorum_loss`]: "Restoring to a previous cluster state" as OpenShift 4.14–4.17
//!   document it (the docs module `dr-restoring-cluster-state.adoc`): stop the static pods and
//!   move the etcd data dir aside on every other control-plane host, `cluster-restore.sh` on the
//!   recovery host, restart the kubelets, approve CSRs, re-create the lost control-plane
//!   Machines, then force new revisions of etcd, kube-apiserver, kube-controller-manager and
//!   kube-scheduler and wait for `AllNodesAtLatestRevision` after each. (4.18 replaced it with
//!   `disable-etcd.sh` and `oc adm wait-for-stable-cluster`; that procedure is not printed.)
//! * [`hosted_cluster`]: a hosted control plane (HyperShift): pause the HostedCluster and its
//!   NodePools (`spec.pausedUntil`), stop the API servers, snapshot etcd in its pod, keep the
//!   snapshot and the aescbc key in the repository, and restore through
//!   `spec.etcd.managed.storage.restoreSnapshotURL` (only when the HostedCluster is created).
//!
//! The text is ours; the commands are the documented ones. Nothing here runs anything.
use serde::Serialize;

/// One numbered step: where it runs, what it does, the commands.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    pub number: usize,
    /// `recovery host m0`, `host m1`, `workstation (oc as cluster-admin)`, `management cluster (oc)`.
    pub on: String,
    pub what: String,
    pub commands: Vec<String>,
}

/// A procedure for one cluster.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Runbook {
    pub title: String,
    /// Which documented procedure this follows.
    pub follows: String,
    pub before: Vec<String>,
    pub steps: Vec<Step>,
}

impl Runbook {
    fn step(&mut self, on: &str, what: &str, commands: Vec<String>) {
        let number = self.steps.len() + 1;
        self.steps.push(Step { number, on: on.to_string(), what: what.to_string(), commands });
    }

    /// Every command of the runbook that starts with `quorum `.
    pub fn quorum_commands(&self) -> Vec<&str> {
        self.steps.iter().flat_map(|s| s.commands.iter()).map(String::as_str).filter(|c| c.starts_with("quorum ")).collect()
    }
}

/// Where the backup to restore comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSource {
    /// A cluster-backup.sh directory already on the recovery host.
    Dir(String),
    /// A backup in a repository: written out on the recovery host in cluster-backup.sh's layout.
    Repo { url: String, cluster: String, id: String },
}

/// The two-of-three (or more) control-plane hosts lost procedure.
pub struct OpenshiftLoss {
    /// Every control-plane host, by the name `ssh core@NAME` reaches.
    pub hosts: Vec<String>,
    /// The host that still has its data (and where the restore runs).
    pub recovery: String,
    /// Why that host: what its member reported, or that nothing answered.
    pub why_recovery: String,
    pub backup: BackupSource,
}

fn redeploy(resource: &str) -> Vec<String> {
    vec![
        format!(r#"oc patch {resource} cluster -p='{{"spec": {{"forceRedeploymentReason": "recovery-'"$( date --rfc-3339=ns )"'"}}}}' --type=merge"#),
        format!(
            r#"oc get {resource} -o=jsonpath='{{range .items[0].status.conditions[?(@.type=="NodeInstallerProgressing")]}}{{.reason}}{{"\n"}}{{.message}}{{"\n"}}'   # repeat until AllNodesAtLatestRevision"#
        ),
    ]
}

/// The OpenShift restore procedure for `o`.
pub fn openshift_quorum_loss(o: &OpenshiftLoss) -> Runbook {
    let others: Vec<&String> = o.hosts.iter().filter(|h| **h != o.recovery).collect();
    let mut r = Runbook {
        title: format!("Restore the control plane of {} on {} from an etcd backup", o.hosts.join(", "), o.recovery),
        follows: "OpenShift 4.14-4.17, Backup and restore > Disaster recovery > Restoring to a previous cluster state".into(),
        before: vec![
            format!("Recovery host: {}.", o.why_recovery),
            "Use a backup taken from the same z-stream release as the cluster.".into(),
            "Log in with a certificate-based kubeconfig (the installer's auth/kubeconfig): OAuth will be down.".into(),
            format!("Open an SSH session to every control-plane host now ({}): the API goes away during the restore.", o.hosts.join(", ")),
        ],
        steps: Vec::new(),
    };
    let backup_dir = match &o.backup {
        BackupSource::Dir(d) => {
            r.step(
                &format!("recovery host {}", o.recovery),
                &format!("check that the backup directory {d} holds one snapshot_<stamp>.db and its static_kuberesources_<stamp>.tar.gz"),
                vec![format!("ls -l {d}")],
            );
            d.clone()
        }
        BackupSource::Repo { url, cluster, id } => {
            let d = "/home/core/backup".to_string();
            r.step(
                &format!("recovery host {}", o.recovery),
                "write the backup from the repository in cluster-backup.sh's layout (needs the repository and bundle passphrases)",
                vec![format!("quorum backups get --repo {url} --cluster {cluster} {id} --openshift-layout -o {d} --password-file REPO_PASS --bundle-password-file BUNDLE_PASS")],
            );
            d
        }
    };
    for h in &others {
        r.step(
            &format!("host {h}"),
            "stop etcd and kube-apiserver and move etcd's data dir aside (wait until each crictl line prints nothing)",
            vec![
                "sudo mv -v /etc/kubernetes/manifests/etcd-pod.yaml /tmp".into(),
                r#"sudo crictl ps | grep etcd | egrep -v "operator|etcd-guard""#.into(),
                "sudo mv -v /etc/kubernetes/manifests/kube-apiserver-pod.yaml /tmp".into(),
                r#"sudo crictl ps | grep kube-apiserver | egrep -v "operator|guard""#.into(),
                "sudo mv -v /var/lib/etcd/ /tmp".into(),
            ],
        );
    }
    r.step(
        &format!("recovery host {}", o.recovery),
        "restore (with the cluster-wide proxy on, export NO_PROXY, HTTP_PROXY and HTTPS_PROXY first)",
        vec![format!("sudo -E /usr/local/bin/cluster-restore.sh {backup_dir}")],
    );
    r.step(
        "workstation (oc)",
        "wait for the nodes to be Ready (a node that stays NotReady: remove the PEM files in /var/lib/kubelet/pki on it)",
        vec!["oc get nodes -w".into()],
    );
    for h in std::iter::once(&o.recovery).chain(others.iter().copied()) {
        r.step(
            &format!("{} {h}", if *h == o.recovery { "recovery host" } else { "host" }),
            "restart the kubelet",
            vec!["sudo systemctl restart kubelet.service".into()],
        );
    }
    r.step(
        "workstation (oc)",
        "approve the pending node-bootstrapper (and, on user-provisioned installs, kubelet-serving) CSRs",
        vec!["oc get csr".into(), "oc adm certificate approve <csr_name>".into()],
    );
    r.step(
        &format!("recovery host {}", o.recovery),
        "check that one etcd member runs",
        vec![r#"sudo crictl ps | grep etcd | egrep -v "operator|etcd-guard""#.into(), "oc -n openshift-etcd get pods -l k8s-app=etcd".into()],
    );
    r.step(
        "workstation (oc)",
        "OVN-Kubernetes only: restart the control-plane pods, then node by node (recovery host first) remove /var/lib/ovn-ic/etc/*.db, restart ovs-vswitchd and ovsdb-server and delete the node's ovnkube-node pod",
        vec![
            "oc -n openshift-ovn-kubernetes delete pod -l app=ovnkube-control-plane".into(),
            "oc -n openshift-ovn-kubernetes delete pod -l app=ovnkube-node --field-selector=spec.nodeName==<node>".into(),
        ],
    );
    let mut machines = vec![
        "oc get machines -n openshift-machine-api -o wide".into(),
        "oc delete machine -n openshift-machine-api <lost machine>".into(),
        "oc apply -f <its sanitized copy>   # one at a time; wait for Running".into(),
    ];
    if let BackupSource::Repo { url, cluster, id } = &o.backup {
        machines.insert(
            1,
            format!("quorum k8s export --repo {url} --cluster {cluster} {id} -n openshift-machine-api --resource machines.machine.openshift.io --sanitize -o machines --password-file REPO_PASS --bundle-password-file BUNDLE_PASS   # providerID, status, instance state dropped; give each copy a new metadata.name"),
        );
    }
    r.step(
        "workstation (oc)",
        &format!(
            "re-create the control-plane Machines of {} one at a time (never the recovery host's); user-provisioned hosts are re-created as they were made",
            others.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", ")
        ),
        machines,
    );
    r.step(
        "workstation (oc)",
        "turn off the quorum guard for the redeployment",
        vec![
            r#"oc patch etcd/cluster --type=merge -p '{"spec": {"unsupportedConfigOverrides": {"useUnsupportedUnsafeNonHANonProductionUnstableEtcd": true}}}'"#
                .into(),
        ],
    );
    let mut etcd =
        vec!["export KUBECONFIG=/etc/kubernetes/static-pod-resources/kube-apiserver-certs/secrets/node-kubeconfigs/localhost-recovery.kubeconfig".to_string()];
    etcd.push(redeploy("etcd").remove(0));
    r.step(&format!("recovery host {}", o.recovery), "force a new etcd revision", etcd);
    r.step(
        "workstation (oc)",
        "turn the quorum guard back on, and wait for every node at etcd's latest revision",
        vec![r#"oc patch etcd/cluster --type=merge -p '{"spec": {"unsupportedConfigOverrides": null}}'"#.into(), redeploy("etcd").remove(1)],
    );
    for res in ["kubeapiserver", "kubecontrollermanager", "kubescheduler"] {
        r.step("workstation (oc)", &format!("force a new {res} revision and wait for AllNodesAtLatestRevision"), redeploy(res));
    }
    r.step(
        "workstation (oc)",
        &format!("check that {} etcd members run, then restart the pods that keep API state (routers, operators)", o.hosts.len()),
        vec!["oc -n openshift-etcd get pods -l k8s-app=etcd".into()],
    );
    r
}

/// A hosted control plane's backup and restore.
pub struct HostedCluster {
    /// The HostedCluster's namespace on the management cluster (`clusters`).
    pub namespace: String,
    pub name: String,
    pub repo: String,
    /// The repository's cluster name for it.
    pub cluster: String,
}

/// The hosted-cluster procedure for `h`.
pub fn hosted_cluster(h: &HostedCluster) -> Runbook {
    let (ns, name, repo, cluster) = (&h.namespace, &h.name, &h.repo, &h.cluster);
    let hcp = format!("{ns}-{name}");
    let pause = |v: &str| {
        vec![
            format!(r#"oc patch -n {ns} hostedclusters/{name} -p '{{"spec":{{"pausedUntil":{v}}}}}' --type=merge"#),
            format!(
                r#"for np in $(oc get nodepools -n {ns} -o jsonpath='{{.items[?(@.spec.clusterName=="{name}")].metadata.name}}'); do oc patch -n {ns} nodepools/$np -p '{{"spec":{{"pausedUntil":{v}}}}}' --type=merge; done"#
            ),
        ]
    };
    let mut r = Runbook {
        title: format!("Back up and restore the etcd of hosted cluster {ns}/{name}"),
        follows: "OpenShift hosted control planes, Backing up and restoring etcd on a hosted cluster (and HyperShift's pause-reconciliation)".into(),
        before: vec![
            format!("Run these against the management cluster; the hosted control plane lives in namespace {hcp}."),
            "The restore works only when the HostedCluster is created (from its saved YAML).".into(),
            "The snapshot is useless without the same aescbc key: it is kept in the backup's bundle below.".into(),
        ],
        steps: Vec::new(),
    };
    r.step("management cluster (oc)", "pause reconciliation of the HostedCluster and its NodePools", pause(r#""true""#));
    r.step(
        "management cluster (oc)",
        "stop the API servers (etcd's writers)",
        vec![format!("oc scale deployment -n {hcp} --replicas=0 kube-apiserver openshift-apiserver openshift-oauth-apiserver")],
    );
    r.step(
        "management cluster (oc)",
        "snapshot etcd in its pod and copy it out (older hosted clusters: --cacert /etc/etcd/tls/client/etcd-client-ca.crt)",
        vec![
            format!("oc exec -it etcd-0 -n {hcp} -- env ETCDCTL_API=3 /usr/bin/etcdctl --cacert /etc/etcd/tls/etcd-ca/ca.crt --cert /etc/etcd/tls/client/etcd-client.crt --key /etc/etcd/tls/client/etcd-client.key --endpoints=localhost:2379 snapshot save /var/lib/data/snapshot.db"),
            format!("oc cp {hcp}/etcd-0:/var/lib/data/snapshot.db ./snapshot.db"),
        ],
    );
    r.step(
        "management cluster (oc)",
        "save the HostedCluster and its etcd encryption key",
        vec![
            format!("oc get hostedcluster -n {ns} {name} -o=jsonpath='{{.spec.secretEncryption.aescbc}}'"),
            format!("oc get secret -n {ns} {name}-etcd-encryption-key -o yaml > {name}-etcd-encryption-key.yaml"),
            format!("oc get hostedcluster -n {ns} {name} -o yaml > {name}-hostedcluster.yaml"),
        ],
    );
    r.step(
        "workstation",
        "store the snapshot in the repository, the key and the HostedCluster in its bundle (bundle key)",
        vec![format!(
            "quorum backup --repo {repo} --cluster {cluster} --snapshot ./snapshot.db --include ./{name}-etcd-encryption-key.yaml --include ./{name}-hostedcluster.yaml --password-file REPO_PASS --bundle-password-file BUNDLE_PASS"
        )],
    );
    r.step("management cluster (oc)", "resume the cluster that was backed up (if it stays)", {
        let mut c = vec![format!("oc scale deployment -n {hcp} --replicas=1 kube-apiserver openshift-apiserver openshift-oauth-apiserver")];
        c.extend(pause("null"));
        c
    });
    r.step(
        "workstation",
        "to restore: a URL etcd can download the snapshot from (an unencrypted copy under exports/, readable by anyone with the URL until it expires), and the saved key and HostedCluster",
        vec![
            format!("quorum backups url --repo {repo} --cluster {cluster} latest --expires 2h --password-file REPO_PASS"),
            format!("quorum backups get --repo {repo} --cluster {cluster} latest --bundle -o ./restore --password-file REPO_PASS --bundle-password-file BUNDLE_PASS"),
        ],
    );
    r.step(
        "management cluster (oc)",
        "create the HostedCluster again with the URL and the same key: apply the key Secret, then the saved HostedCluster with this in its spec (and the pausedUntil line removed)",
        vec![
            format!("oc apply -f ./restore/<path>/{name}-etcd-encryption-key.yaml"),
            format!(
                "spec:\n  etcd:\n    managementType: Managed\n    managed:\n      storage:\n        type: PersistentVolume\n        restoreSnapshotURL:\n        - \"<the URL printed above>\"\n  secretEncryption:\n    type: aescbc\n    aescbc:\n      activeKey:\n        name: {name}-etcd-encryption-key"
            ),
            format!("oc apply -f ./restore/<path>/{name}-hostedcluster.yaml"),
        ],
    );
    r.step(
        "management cluster (oc)",
        "remove the exported copy once the cluster runs",
        vec![format!("quorum backups url --repo {repo} --cluster {cluster} --remove latest --password-file REPO_PASS")],
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openshift_steps_cover_every_host() {
        let r = openshift_quorum_loss(&OpenshiftLoss {
            hosts: vec!["m0".into(), "m1".into(), "m2".into()],
            recovery: "m0".into(),
            why_recovery: "m0, the first of --hosts".into(),
            backup: BackupSource::Repo { url: "s3://b/etcd".into(), cluster: "ocp".into(), id: "latest".into() },
        });
        assert!(r.steps.windows(2).all(|w| w[1].number == w[0].number + 1));
        for h in ["m1", "m2"] {
            let s = r.steps.iter().find(|s| s.on == format!("host {h}") && s.what.starts_with("stop etcd")).unwrap();
            assert!(s.commands.iter().any(|c| c == "sudo mv -v /var/lib/etcd/ /tmp"));
        }
        assert!(!r.steps.iter().any(|s| s.on == "host m0"), "the recovery host keeps its data");
        let restore = r.steps.iter().position(|s| s.commands.iter().any(|c| c.contains("cluster-restore.sh /home/core/backup"))).unwrap();
        let fetch = r.steps.iter().position(|s| s.commands.iter().any(|c| c.contains("--openshift-layout -o /home/core/backup"))).unwrap();
        assert!(fetch < restore);
        assert_eq!(r.quorum_commands().len(), 2);
        let text = serde_json::to_string(&r).unwrap();
        for res in ["etcd cluster", "kubeapiserver cluster", "kubecontrollermanager cluster", "kubescheduler cluster"] {
            assert!(text.contains(&format!("oc patch {res} -p=")), "{res}");
        }
    }

    #[test]
    fn hosted_steps_pause_and_unpause() {
        let r = hosted_cluster(&HostedCluster { namespace: "clusters".into(), name: "hc1".into(), repo: "s3://b/etcd".into(), cluster: "hc1".into() });
        let all: Vec<&String> = r.steps.iter().flat_map(|s| s.commands.iter()).collect();
        assert!(all.iter().any(|c| c.contains(r#"hostedclusters/hc1 -p '{"spec":{"pausedUntil":"true"}}'"#)));
        assert!(all.iter().any(|c| c.contains(r#"hostedclusters/hc1 -p '{"spec":{"pausedUntil":null}}'"#)));
        assert!(all.iter().any(|c| c.contains("restoreSnapshotURL") && c.contains("name: hc1-etcd-encryption-key")));
        assert_eq!(r.quorum_commands().len(), 4);
    }
}
