using System.Collections.Concurrent;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Retrieval.ServiceDefaults;

/// <summary>Limits of the service as a whole (configuration section <c>Server</c>).</summary>
public sealed class ServerOptions
{
    public const string Section = "Server";

    /// <summary>
    /// gRPC calls the service handles at once (streams count while they are open); one more is refused at once with
    /// RESOURCE_EXHAUSTED. The health and reflection services are not counted.
    /// </summary>
    [Range(1, 10_000_000)]
    public int MaxCallsInFlight { get; set; } = 1000;
}

/// <summary>
/// Bounds the gRPC calls a service handles at once (<see cref="ServerOptions.MaxCallsInFlight"/>). One call more is
/// answered at once, unread, with RESOURCE_EXHAUSTED naming the setting, and counted (<c>{prefix}.refused</c> by
/// method). Callers that do not bound themselves can open calls faster than an overloaded service finishes them: each
/// HTTP/2 connection carries up to 100 at once, and a caller may open many connections. In the benchmark's collapse
/// (bench/README.md) 10,000–18,000 calls were open in the query service, and the memory they held slowed its collections
/// until nothing was answered in time. RESOURCE_EXHAUSTED rather than UNAVAILABLE: the service is up and refusing work,
/// and Retrieval.Client's retry policy (UNAVAILABLE only) does not send the call straight back. The health and
/// reflection services are not counted: a busy service still says it is serving.
/// </summary>
public static class CallAdmission
{
    public static IApplicationBuilder UseCallAdmission(this IApplicationBuilder app)
    {
        int max = app.ApplicationServices.GetRequiredService<IOptions<ServerOptions>>().Value.MaxCallsInFlight;
        var metrics = app.ApplicationServices.GetRequiredService<RequestMetrics>();
        var calls = new CallsInFlight(max);
        // The refusal's message, once per service: refusals come by the thousand when they come.
        var busy = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        return app.Use((context, next) =>
        {
            if (context.GetEndpoint()?.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method is not { } method || IsExempt(method.ServiceName))
            {
                return next(context);
            }
            if (!calls.TryEnter())
            {
                metrics.Refused(method.Name);
                return Refuse(context, busy.GetOrAdd(method.ServiceName, static (service, max) =>
                    $"{service} busy: {max} calls in flight, as many as Server:MaxCallsInFlight allows; try again later", max));
            }
            Task call;
            try
            {
                call = next(context);
            }
            catch
            {
                calls.Exit();
                throw;
            }
            if (call.IsCompleted)
            {
                calls.Exit();
                return call;
            }
            return ReleaseWhenDone(call, calls);
        });
    }

    private static async Task ReleaseWhenDone(Task call, CallsInFlight calls)
    {
        try
        {
            await call;
        }
        finally
        {
            calls.Exit();
        }
    }

    /// <summary>A trailers-only gRPC answer: the status in the response headers, no message.</summary>
    private static Task Refuse(HttpContext context, string message)
    {
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/grpc";
        context.Response.Headers["grpc-status"] = ((int)StatusCode.ResourceExhausted).ToString(CultureInfo.InvariantCulture);
        context.Response.Headers["grpc-message"] = message; // printable ASCII without '%': nothing to percent-encode
        return Task.CompletedTask;
    }

    private static bool IsExempt(string service) =>
        service.StartsWith("grpc.health.", StringComparison.Ordinal) || service.StartsWith("grpc.reflection.", StringComparison.Ordinal);
}
