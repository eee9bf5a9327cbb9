//! A NATS client of the test's own, for looking into (and, to set up a
//! case, writing) the buckets the nodes use.

use std::time::Duration;

/// A NATS client of the test's own, on a small runtime of its own, for
/// looking into the buckets the nodes write.
pub struct Inspector {
    rt: tokio::runtime::Runtime,
    js: async_nats::jetstream::Context,
}

impl Inspector {
    pub fn connect(urls: &str) -> Inspector {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let addrs: Vec<async_nats::ServerAddr> =
            urls.split(',').map(|u| u.parse().unwrap()).collect();
        let js = rt.block_on(async {
            let client = async_nats::connect(addrs).await.unwrap();
            let mut js = async_nats::jetstream::new(client);
            js.set_timeout(Duration::from_secs(2));
            js
        });
        Inspector { rt, js }
    }

    /// Does the object store hold blob `name` (`None`: could not tell)?
    pub fn holds_blob(&self, name: &str) -> Option<bool> {
        self.rt.block_on(async {
            let store = self.js.get_object_store("avatar_edge_blobs").await.ok()?;
            match store.info(name).await {
                Ok(info) => Some(!info.deleted),
                Err(e)
                    if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound =>
                {
                    Some(false)
                }
                Err(_) => None,
            }
        })
    }

    /// Does the index bucket hold master `hash`'s entry?
    pub fn holds_manifest(&self, hash: &str) -> Option<bool> {
        self.rt.block_on(async {
            let kv = self.js.get_key_value("avatar_edge_index").await.ok()?;
            kv.get(format!("m.{hash}")).await.ok().map(|v| v.is_some())
        })
    }

    /// Ask stream `name`'s leader to step down (a new one is elected from
    /// its peers): what a rolling restart of nats-server does to each
    /// stream its server leads. The leader's reply: `Ok` once it stepped down.
    pub fn step_down(&self, name: &str) -> Result<(), String> {
        self.rt.block_on(async {
            let subject = format!("STREAM.LEADER.STEPDOWN.{name}");
            let r: serde_json::Value = self
                .js
                .request(subject, &())
                .await
                .map_err(|e| e.to_string())?;
            match r.get("success").and_then(|s| s.as_bool()) {
                Some(true) => Ok(()),
                _ => Err(r.to_string()),
            }
        })
    }

    /// The index of the nats-server leading the index bucket's stream.
    pub fn index_leader(&self) -> usize {
        self.rt.block_on(async {
            let mut s = self.js.get_stream("KV_avatar_edge_index").await.unwrap();
            let info = s.info().await.unwrap();
            let leader = info
                .cluster
                .as_ref()
                .and_then(|c| c.leader.clone())
                .unwrap();
            leader.trim_start_matches("test-nats-").parse().unwrap()
        })
    }

    /// Master `hash`'s entry in the index bucket and its revision.
    pub fn master_entry(&self, hash: &str) -> Option<(u64, serde_json::Value)> {
        self.rt.block_on(async {
            let kv = self.js.get_key_value("avatar_edge_index").await.unwrap();
            let e = kv.entry(format!("m.{hash}")).await.unwrap()?;
            let put = e.operation == async_nats::jetstream::kv::Operation::Put;
            put.then(|| (e.revision, serde_json::from_slice(&e.value).unwrap()))
        })
    }

    /// The blobs of salted master `hash`'s rungs.
    pub fn rungs(&self, hash: &str) -> Vec<String> {
        let (_, v) = self.master_entry(hash).unwrap();
        assert_eq!(v["salted"], true, "{v}");
        let rungs = v["rungs"].as_array().unwrap();
        rungs
            .iter()
            .map(|r| r["blob"].as_str().unwrap().to_string())
            .collect()
    }

    /// Make master `hash`'s entry look written before salted rungs.
    /// The bucket then is one an earlier version wrote: its format marker
    /// (`v.format`, which says no such master exists) goes too.
    pub fn unsalt(&self, hash: &str) {
        let (rev, mut v) = self.master_entry(hash).unwrap();
        v.as_object_mut().unwrap().remove("salted");
        self.rt.block_on(async {
            let kv = self.js.get_key_value("avatar_edge_index").await.unwrap();
            let body = serde_json::to_vec(&v).unwrap().into();
            kv.update(format!("m.{hash}"), body, rev).await.unwrap();
            kv.delete("v.format").await.unwrap();
        });
    }

    /// The index bucket's format marker, if it has one.
    pub fn format_marker(&self) -> Option<String> {
        self.rt.block_on(async {
            let kv = self.js.get_key_value("avatar_edge_index").await.unwrap();
            let v = kv.get("v.format").await.unwrap()?;
            Some(String::from_utf8(v.to_vec()).unwrap())
        })
    }
}
