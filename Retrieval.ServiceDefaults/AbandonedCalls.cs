using System.IO.Pipelines;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Retrieval.ServiceDefaults;

/// <summary>
/// Drops the unary calls whose caller is gone before the call could be read: the caller reset the stream, mostly at
/// its deadline while the call waited for a thread in an overloaded service. Such a call is counted
/// (<c>{prefix}.abandoned</c> by method) and nothing else: no work for nobody, and none of grpc-dotnet's error with a
/// stack trace ("Error when executing service method ... The client reset the request stream"), which it logs for
/// every such call, thousands a second in an overload, when the service can least afford it. The middleware waits
/// for a unary call's request to arrive whole (looking at it without consuming it, so gRPC reads it as before; at most
/// <see cref="MaxLookahead"/> bytes, well within HTTP/2's flow-control window) before gRPC reads it; streaming calls
/// go straight through.
/// </summary>
public static class AbandonedCalls
{
    /// <summary>Request bytes looked at before the call is handed over as it is (gRPC then reads the rest).</summary>
    public const int MaxLookahead = 64 * 1024;

    public static IApplicationBuilder UseAbandonedCallsDropped(this IApplicationBuilder app)
    {
        var metrics = app.ApplicationServices.GetRequiredService<RequestMetrics>();
        return app.Use((context, next) =>
        {
            if (context.GetEndpoint()?.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method is not { Type: MethodType.Unary } method)
            {
                return next(context);
            }
            var body = context.Request.BodyReader;
            try
            {
                // Mostly the request came with its headers: one look, no wait.
                if (!context.RequestAborted.IsCancellationRequested && body.TryRead(out var read) && LookedEnough(body, read))
                {
                    return next(context);
                }
            }
            catch (Exception e) when (IsGone(e, context))
            {
            }
            if (context.RequestAborted.IsCancellationRequested)
            {
                metrics.Abandoned(method.Name);
                return Task.CompletedTask;
            }
            return WaitForRequestThenCall(context, next, body, method.Name, metrics);
        });
    }

    private static async Task WaitForRequestThenCall(HttpContext context, RequestDelegate next, PipeReader body, string method, RequestMetrics metrics)
    {
        try
        {
            ReadResult read;
            do
            {
                read = await body.ReadAsync(context.RequestAborted);
            }
            while (!LookedEnough(body, read));
        }
        catch (Exception e) when (IsGone(e, context))
        {
            metrics.Abandoned(method);
            return;
        }
        await next(context);
    }

    /// <summary>
    /// Marks what was read as looked at, none of it consumed (gRPC reads it all again), and says whether the request is
    /// whole or long enough to hand over.
    /// </summary>
    private static bool LookedEnough(PipeReader body, ReadResult read)
    {
        body.AdvanceTo(read.Buffer.Start, read.Buffer.End);
        return read.IsCompleted || read.IsCanceled || read.Buffer.Length >= MaxLookahead;
    }

    /// <summary>The request stream was reset or aborted: the caller is gone.</summary>
    private static bool IsGone(Exception e, HttpContext context) =>
        e is IOException || (e is OperationCanceledException && context.RequestAborted.IsCancellationRequested);
}
