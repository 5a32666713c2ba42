//! The plug-in trace log: lines a plug-in writes through the tracing service, kept to a
//! byte budget by dropping the oldest lines (the newest are the ones that explain a
//! failure).

use std::collections::VecDeque;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct TraceLog {
    lines: VecDeque<String>,
    bytes: usize,
    #[serde(skip)]
    limit: usize,
    /// Lines dropped to stay within the limit.
    dropped: u64,
}

impl TraceLog {
    /// A log that keeps at most `limit` bytes (each line counts its length plus one).
    pub fn new(limit: usize) -> Self {
        TraceLog { limit, ..Default::default() }
    }

    pub fn push(&mut self, line: &str) {
        let mut line = line.to_owned();
        if line.len() + 1 > self.limit {
            // A single line larger than the log keeps its end, cut at a char boundary.
            let mut start = line.len() + 1 - self.limit;
            while !line.is_char_boundary(start) {
                start += 1;
            }
            line.drain(..start);
        }
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > self.limit {
            let Some(oldest) = self.lines.pop_front() else { break };
            self.bytes -= oldest.len() + 1;
            self.dropped += 1;
        }
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes held, counting one newline per line.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many older lines were dropped to keep within the limit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_within_the_limit() {
        let mut log = TraceLog::new(100);
        for n in 0..50 {
            log.push(&format!("line {n:03}"));
        }
        assert!(log.bytes() <= 100);
        assert_eq!(log.lines().last(), Some("line 049"));
        assert_eq!(log.len(), 11);
        assert_eq!(log.dropped(), 39);
    }

    #[test]
    fn a_line_larger_than_the_log_keeps_its_end() {
        let mut log = TraceLog::new(10);
        log.push("é".repeat(20).as_str());
        assert!(log.bytes() <= 10);
        assert!(log.lines().next().unwrap().chars().all(|c| c == 'é'));
    }
}
