using Retrieval.CandidateTower.Grpc;
using Retrieval.CandidateTower.Search;
using Retrieval.Core.Search;
using Retrieval.Core.Serving;
using Retrieval.ServiceDefaults;

namespace Retrieval.CandidateTower.Extensions;

public static class Extensions
{
    /// <summary>The candidate tower's own services: search options, metrics, gRPC with the configured message limit.</summary>
    public static WebApplicationBuilder AddCandidateTower(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<SearchOptions>().BindConfiguration(SearchOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<SearchMetrics>();
        builder.Services.AddHostedService<SearchWarmUp>();
        var maxBytes = builder.Configuration.GetSection(SearchOptions.Section).Get<SearchOptions>()?.MaxRequestBytes ?? new SearchOptions().MaxRequestBytes;
        builder.Services.AddRequestMetrics(SearchMetrics.MeterName, "retrieval.candidate");
        builder.Services.AddGrpc(grpc =>
        {
            grpc.MaxReceiveMessageSize = maxBytes;
            grpc.EnableDetailedErrors = false;
        });
        // One instance for every call (it holds nothing of a call's own); gRPC would otherwise build one per call.
        builder.Services.AddSingleton<CandidateTowerService>();
        return builder;
    }
}

/// <summary>Runs one search on every version that becomes current, so the first request does not pay for JIT and page-in.</summary>
public sealed class SearchWarmUp(ModelStore store) : IHostedService
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

    private static void Warm(LoadedModel model)
    {
        var candidates = model.Artifact.Candidates;
        ExactSearch.TopK(candidates, new float[candidates.Dim], 10, new ScoredCandidate[10]);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
