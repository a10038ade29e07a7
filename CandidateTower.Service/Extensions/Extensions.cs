using Retrieval.CandidateTower.Search;

namespace Retrieval.CandidateTower.Extensions;

public static class Extensions
{
    /// <summary>The candidate tower's own services: search options, metrics, gRPC with the configured message limit.</summary>
    public static WebApplicationBuilder AddCandidateTower(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<SearchOptions>().BindConfiguration(SearchOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<SearchMetrics>();
        var maxBytes = builder.Configuration.GetSection(SearchOptions.Section).Get<SearchOptions>()?.MaxRequestBytes ?? new SearchOptions().MaxRequestBytes;
        builder.Services.AddGrpc(grpc =>
        {
            grpc.MaxReceiveMessageSize = maxBytes;
            grpc.EnableDetailedErrors = false;
        });
        return builder;
    }
}
