-- wrk script of the end-to-end benchmark: `-- POST` as script argument sends POSTs (empty body);
-- at the end, one line "BENCH-JSON {...}" with the counts and latency percentiles (microseconds).
function init(args)
  if args[1] then
    wrk.method = args[1]
    wrk.body = ""
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d,'
    .. ' "read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d,'
    .. ' "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
