//! A datapath trace record (an aya-log target and a message of numbers)
//! as one readable line, with the names only the agent knows.

use std::collections::BTreeMap;

use lb_common::abi::{
    DropReason, FLOW_KEPT, FLOW_MAGLEV, FLOW_REHASH, FLOW_REUSED_PORT, FLOW_SYN_AGAIN, HOOK_TC,
    NO_SERVICE, PROTO_TCP, PROTO_UDP, record,
};

/// Names of the ids records carry, taken when a session starts.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Service id -> "name (vip proto)".
    pub services: BTreeMap<u32, String>,
    /// Backend id -> "ip:port".
    pub backends: BTreeMap<u32, String>,
}

impl Names {
    fn service(&self, id: u32) -> String {
        self.services.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    }

    fn backend(&self, id: u32) -> String {
        self.backends.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    }
}

/// The line for the record `message` of kind `target`. A record this agent
/// does not know (another build's) is shown as it came.
pub fn line(target: &str, message: &str, names: &Names) -> String {
    let nums: Vec<u32> = message.split(' ').filter_map(|w| w.parse().ok()).collect();
    let known = match (target, nums.as_slice()) {
        (record::PACKET, _) => packet(message),
        (record::SERVICE, [id]) if *id == NO_SERVICE => {
            Some("service: none (a reply from a backend, or traffic for the kernel)".to_owned())
        }
        (record::SERVICE, [id]) => Some(format!("service: {}", names.service(*id))),
        (record::FLOW, [why, backend, previous, slot]) => {
            flow(*why, &names.backend(*backend), &names.backend(*previous), *slot)
        }
        (record::ACTION, [hook, action]) => {
            Some(format!("action: {}", action_name(*hook, *action)))
        }
        (record::EXCEPTION, [reason]) => DropReason::ALL
            .get(*reason as usize)
            .map(|r| format!("exception: {} ({})", r.name(), r.action())),
        _ => None,
    };
    known.unwrap_or_else(|| format!("{target}: {message}"))
}

/// "packet 10.0.0.2:40001 > 10.0.0.100:80 tcp [S]" from
/// "SRC > DST proto P flags F" (F in hex).
fn packet(message: &str) -> Option<String> {
    let w: Vec<&str> = message.split(' ').collect();
    let [src, ">", dst, "proto", proto, "flags", flags] = w.as_slice() else { return None };
    let proto: u8 = proto.parse().ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(match proto {
        PROTO_TCP => format!("packet: {src} > {dst} tcp [{}]", tcp_flags(flags)),
        PROTO_UDP => format!("packet: {src} > {dst} udp"),
        p => format!("packet: {src} > {dst} proto {p}"),
    })
}

/// TCP flags as tcpdump writes them ("S", "S.", "F.", "R", "." ...).
fn tcp_flags(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [(0x02, 'S'), (0x01, 'F'), (0x04, 'R'), (0x08, 'P'), (0x10, '.')] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

fn flow(why: u32, backend: &str, previous: &str, slot: u32) -> Option<String> {
    let text = match why {
        FLOW_KEPT => format!("backend {backend}: kept (the flow is pinned to it)"),
        FLOW_MAGLEV => format!("backend {backend}: new flow, Maglev slot {slot}"),
        FLOW_REHASH => {
            format!(
                "backend {backend}: re-hashed off {previous}, which is down (Maglev slot {slot})"
            )
        }
        FLOW_REUSED_PORT => format!(
            "backend {backend}: SYN on a reused port (the tuple was pinned to {previous}), Maglev slot {slot}"
        ),
        FLOW_SYN_AGAIN => format!("backend {backend}: retransmitted SYN of the waiting connection"),
        _ => return None,
    };
    Some(text)
}

/// The name of `action` at `hook` (`HOOK_*`).
fn action_name(hook: u32, action: u32) -> String {
    let name = if hook == HOOK_TC {
        match action as i32 {
            -1 => "pass (TC_ACT_UNSPEC: to the kernel)",
            0 => "pass (TC_ACT_OK)",
            2 => "drop (TC_ACT_SHOT)",
            7 => "redirect (TC_ACT_REDIRECT)",
            _ => "",
        }
    } else {
        match action {
            0 => "aborted (XDP_ABORTED)",
            1 => "drop (XDP_DROP)",
            2 => "pass (XDP_PASS: to the kernel)",
            3 => "back out (XDP_TX)",
            4 => "redirect (XDP_REDIRECT)",
            _ => "",
        }
    };
    if name.is_empty() { format!("{action}") } else { name.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            services: [(0, "web (10.0.0.100:80 tcp)".to_owned())].into(),
            backends: [(2, "10.0.1.2:80".to_owned()), (3, "10.0.1.3:80".to_owned())].into(),
        }
    }

    #[test]
    fn packets_show_their_tuple_and_tcp_flags() {
        let l = line(record::PACKET, "10.0.0.2:40001 > 10.0.0.100:80 proto 6 flags 12", &names());
        assert_eq!(l, "packet: 10.0.0.2:40001 > 10.0.0.100:80 tcp [S.]");
        let l = line(record::PACKET, "10.0.0.2:5353 > 10.0.0.100:53 proto 17 flags 0", &names());
        assert_eq!(l, "packet: 10.0.0.2:5353 > 10.0.0.100:53 udp");
    }

    #[test]
    fn services_and_backends_are_named() {
        assert_eq!(line(record::SERVICE, "0", &names()), "service: web (10.0.0.100:80 tcp)");
        assert!(line(record::SERVICE, &NO_SERVICE.to_string(), &names()).contains("none"));
        let l = line(record::FLOW, &format!("{FLOW_MAGLEV} 2 {} 977", u32::MAX), &names());
        assert_eq!(l, "backend 10.0.1.2:80: new flow, Maglev slot 977");
        let l = line(record::FLOW, &format!("{FLOW_REHASH} 2 3 5"), &names());
        assert_eq!(
            l,
            "backend 10.0.1.2:80: re-hashed off 10.0.1.3:80, which is down (Maglev slot 5)"
        );
        let l = line(record::FLOW, &format!("{FLOW_KEPT} 9 9 0"), &names());
        assert_eq!(l, "backend #9: kept (the flow is pinned to it)");
    }

    #[test]
    fn actions_and_exceptions_are_named_per_hook() {
        assert_eq!(line(record::ACTION, "0 4", &names()), "action: redirect (XDP_REDIRECT)");
        assert_eq!(line(record::ACTION, "1 7", &names()), "action: redirect (TC_ACT_REDIRECT)");
        let reason = DropReason::RateLimited as u32;
        assert_eq!(
            line(record::EXCEPTION, &reason.to_string(), &names()),
            format!("exception: rate_limited ({})", DropReason::RateLimited.action())
        );
    }

    #[test]
    fn unknown_records_are_shown_as_they_came() {
        assert_eq!(line("lb_other", "1 2", &names()), "lb_other: 1 2");
        assert_eq!(line(record::FLOW, "1 2", &names()), "lb_flow: 1 2");
    }
}
