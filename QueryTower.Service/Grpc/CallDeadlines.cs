using Grpc.Core;

namespace Retrieval.QueryTower.Grpc;

/// <summary>
/// The query service keeps each call's deadline itself: a middleware takes the grpc-timeout header off the request
/// before gRPC reads it and records the deadline as a <see cref="CallDeadline"/> feature, which the handlers use as
/// they would <c>ServerCallContext.Deadline</c>. grpc-dotnet gives every call with a deadline a deadline manager and a
/// <c>System.Threading.Timer</c>, finalizable, so every collection has to go through the timers of the calls since
/// the last one (0.3 ms of each query-service pause with 5 s deadlines at 3,000/s, against 0.005 ms without); the
/// handlers here answer within the deadline on their own (a degraded answer when the candidate tower is late), and a
/// caller whose deadline passes cancels the call, which still cancels the handler.
/// </summary>
public static class CallDeadlines
{
    private const string Header = "grpc-timeout";

    public static IApplicationBuilder UseCallDeadlines(this IApplicationBuilder app) => app.Use((context, next) =>
    {
        if (context.Request.Headers.TryGetValue(Header, out var value))
        {
            // A malformed timeout is left for gRPC to refuse as it would.
            if (TryParse(value.ToString(), out var timeout))
            {
                var now = DateTime.UtcNow;
                context.Request.Headers.Remove(Header);
                context.Features.Set(new CallDeadline(timeout < DateTime.MaxValue - now ? now + timeout : DateTime.MaxValue));
            }
        }
        return next(context);
    });

    /// <summary>The call's deadline: the one recorded by the middleware, else gRPC's own.</summary>
    public static DateTime Of(ServerCallContext context) =>
        context.GetHttpContext().Features.Get<CallDeadline>()?.At ?? context.Deadline;

    /// <summary>
    /// A grpc-timeout value: at most 8 digits and a unit (H, M, S, m, u, n), as the gRPC over HTTP/2 protocol has it.
    /// </summary>
    public static bool TryParse(string value, out TimeSpan timeout)
    {
        timeout = default;
        if (value.Length is < 2 or > 9 || !long.TryParse(value.AsSpan(0, value.Length - 1), System.Globalization.NumberStyles.None,
            System.Globalization.CultureInfo.InvariantCulture, out long amount))
        {
            return false;
        }
        long? ticks = value[^1] switch
        {
            'H' => amount * TimeSpan.TicksPerHour,
            'M' => amount * TimeSpan.TicksPerMinute,
            'S' => amount * TimeSpan.TicksPerSecond,
            'm' => amount * TimeSpan.TicksPerMillisecond,
            'u' => amount * 10,
            'n' => amount / 100,
            _ => null,
        };
        if (ticks is not { } t)
        {
            return false;
        }
        timeout = TimeSpan.FromTicks(t);
        return true;
    }
}

/// <summary>A call's deadline, kept by <see cref="CallDeadlines"/>.</summary>
public sealed record CallDeadline(DateTime At);
