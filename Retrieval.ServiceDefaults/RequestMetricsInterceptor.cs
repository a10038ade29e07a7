using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Retrieval.ServiceDefaults;

/// <summary>A service's request count and latency instruments, by method and status code.</summary>
public sealed class RequestMetrics(IMeterFactory meters, string meterName, string prefix)
{
    private readonly Meter _meter = meters.Create(meterName);
    private Counter<long>? _requests;
    private Histogram<double>? _latency;
    private Counter<long>? _abandoned;
    private Counter<long>? _refused;

    public void Record(string method, string status, double milliseconds)
    {
        _requests ??= _meter.CreateCounter<long>($"{prefix}.requests", description: "Requests by method and status code");
        _latency ??= _meter.CreateHistogram<double>($"{prefix}.latency", unit: "ms", description: "Request latency by method and status code");
        var tags = new TagList { { "method", method }, { "status", status } };
        _requests.Add(1, tags);
        _latency.Record(milliseconds, tags);
    }

    /// <summary>Counts a call dropped unread because its caller had already gone (see <see cref="AbandonedCalls"/>).</summary>
    public void Abandoned(string method)
    {
        _abandoned ??= _meter.CreateCounter<long>($"{prefix}.abandoned",
            description: "Unary calls dropped unread because the caller had reset them (mostly past its deadline while the call waited)");
        _abandoned.Add(1, new KeyValuePair<string, object?>("method", method));
    }

    /// <summary>Counts a call refused unread because the service had as many in flight as it takes (see <see cref="CallAdmission"/>).</summary>
    public void Refused(string method)
    {
        _refused ??= _meter.CreateCounter<long>($"{prefix}.refused",
            description: "Calls refused with RESOURCE_EXHAUSTED because Server:MaxCallsInFlight calls were in flight (load shed)");
        _refused.Add(1, new KeyValuePair<string, object?>("method", method));
    }
}

/// <summary>
/// Counts and times every unary and server-streaming call, so handlers carry no measuring code. Registered as a
/// singleton by <see cref="ServiceDefaultsExtensions.AddRequestMetrics"/>: gRPC would otherwise make one per call.
/// </summary>
public sealed class RequestMetricsInterceptor(RequestMetrics metrics) : Interceptor
{
    // context.Method is "/package.Service/Method": the method's part, cut once per method rather than once per call.
    private readonly ConcurrentDictionary<string, string> _methodNames = new(StringComparer.Ordinal);

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            var response = await continuation(request, context);
            Record(context, nameof(StatusCode.OK), start);
            return response;
        }
        catch (Exception e)
        {
            Record(context, Status(e), start);
            throw;
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            await continuation(request, responseStream, context);
            Record(context, nameof(StatusCode.OK), start);
        }
        catch (Exception e)
        {
            Record(context, Status(e), start);
            throw;
        }
    }

    private static string Status(Exception e) => e is RpcException rpc ? rpc.StatusCode.ToString() : nameof(StatusCode.Unknown);

    private void Record(ServerCallContext context, string status, long start) =>
        metrics.Record(_methodNames.GetOrAdd(context.Method, static m => m[(m.LastIndexOf('/') + 1)..]), status,
            Stopwatch.GetElapsedTime(start).TotalMilliseconds);
}
