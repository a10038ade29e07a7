using Microsoft.Extensions.Options;
using Retrieval.Core.Features;
using Retrieval.Core.Serving;
using Retrieval.QueryTower.Grpc;
using Retrieval.QueryTower.Recommendation;
using Retrieval.ServiceDefaults;

namespace Retrieval.QueryTower.Extensions;

public static class Extensions
{
    /// <summary>The query tower's own services: options, metrics, gRPC, and the candidate tower client and pipeline.</summary>
    public static WebApplicationBuilder AddQueryTower(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<RecommendOptions>().BindConfiguration(RecommendOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<CandidateTowerOptions>().BindConfiguration(CandidateTowerOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<QueryMetrics>();
        builder.Services.AddSingleton<DegradedLog>();
        builder.Services.AddSingleton<CandidateSearch>();
        builder.Services.AddHostedService<WarmUp>();
        builder.Services.AddRequestMetrics(QueryMetrics.MeterName, "retrieval.query");
        builder.Services.AddGrpc(grpc => grpc.MaxReceiveMessageSize = 1024 * 1024);
        // One instance for every call (it holds nothing of a call's own); gRPC would otherwise build one per call.
        builder.Services.AddSingleton<QueryTowerService>();
        // One client from the factory: its channel's handler (and HTTP/2 connection) is shared by every request.
        builder.Services
            .AddGrpcClient<V1.CandidateTower.CandidateTowerClient>((sp, o) =>
                o.Address = new Uri(sp.GetRequiredService<IOptions<CandidateTowerOptions>>().Value.Address))
            // No retry policy in the channel's service config: retries are Polly's alone, so no call is retried twice.
            // No client-factory logging handlers: they open two log scopes per call (allocations, an execution-context
            // change) for lines the service logs itself where they matter.
            .RemoveAllLoggers()
            // After a failed connect the channel answers UNAVAILABLE at once until its reconnect backoff ends (by default
            // 1 s, growing to 2 minutes): a candidate tower that is back would still get no calls for that long. The
            // circuit breaker already keeps an outage from being hammered, so the channel retries its connection soon.
            .ConfigureChannel(channel =>
            {
                channel.InitialReconnectBackoff = TimeSpan.FromMilliseconds(100);
                channel.MaxReconnectBackoff = TimeSpan.FromSeconds(1);
            })
            .ConfigurePrimaryHttpMessageHandler(sp =>
            {
                var handler = new SocketsHttpHandler
                {
                    EnableMultipleHttp2Connections = true,
                    PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
                    KeepAlivePingDelay = TimeSpan.FromSeconds(30),
                    KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
                    ConnectTimeout = TimeSpan.FromSeconds(2),
                };
                var options = sp.GetRequiredService<IOptions<CandidateTowerOptions>>().Value;
                if (options.TrustedCaPath is { Length: > 0 } trusted)
                {
                    TlsTrust.TrustOnly(handler, trusted);
                }
                if (options is { ClientCertificatePath: { Length: > 0 } certificate, ClientKeyPath: { Length: > 0 } key })
                {
                    TlsTrust.PresentCertificate(handler, certificate, key);
                }
                return handler;
            });
        return builder;
    }
}

/// <summary>On every model version that becomes current: one embedding and one candidate call, off the request path.</summary>
public sealed class WarmUp(ModelStore store, CandidateSearch search) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        store.VersionActivated += Warm;
        if (store.Current is { } current)
        {
            Warm(current); // loaded before this subscribed
        }
        return Task.CompletedTask;
    }

    private void Warm(LoadedModel model) => _ = Task.Run(() =>
        search.WarmUpAsync(model.Artifact.QueryTower.Embed(new QueryInput("warm-up", DateTimeOffset.UtcNow.ToUnixTimeSeconds())), model.Version));

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
