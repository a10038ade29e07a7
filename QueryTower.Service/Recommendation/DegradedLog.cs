using System.Diagnostics;

namespace Retrieval.QueryTower.Recommendation;

/// <summary>
/// The warning for degraded answers, at most once per interval with how many there were since the last one: in an
/// outage every request degrades, and a line per request would flood the log and, once the console logger's queue
/// is full, hold request threads. The degraded-answers metric counts every one.
/// </summary>
public sealed class DegradedLog(ILogger<DegradedLog> log)
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);

    private long _unlogged;
    private long _lastLogged = long.MinValue;

    public void Record(string userId, string reason)
    {
        Interlocked.Increment(ref _unlogged);
        long now = Stopwatch.GetTimestamp();
        long last = Volatile.Read(ref _lastLogged);
        if (last != long.MinValue && Stopwatch.GetElapsedTime(last, now) < Interval)
        {
            return;
        }
        if (Interlocked.CompareExchange(ref _lastLogged, now, last) != last)
        {
            return; // another request logs this interval
        }
        long count = Interlocked.Exchange(ref _unlogged, 0);
        log.LogWarning("Recommend degraded: {Count} answer(s) from the popularity fallback since the last such message, the latest for user {User}: {Reason}",
            count, userId, reason);
    }
}
