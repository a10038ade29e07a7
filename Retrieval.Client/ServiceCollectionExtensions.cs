using System;
using Grpc.Net.ClientFactory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Retrieval.Tls;
using Retrieval.V1;

namespace Retrieval.Client;

/// <summary>Registers <see cref="RetrievalClient"/> with dependency injection.</summary>
public static class ServiceCollectionExtensions
{
    /// <summary>
    /// Adds a <see cref="RetrievalClient"/> whose channel comes from the gRPC client factory (one shared handler,
    /// pooled connections), with the retry policy and default deadline of <see cref="RetrievalClientOptions"/>.
    /// </summary>
    /// <example><code>services.AddRetrievalClient(o => o.Address = new Uri("http://query-tower:5100"));</code></example>
    /// <remarks>
    /// With <see cref="RetrievalClientOptions.TrustedCaPath"/> the factory's primary handler trusts only those authorities,
    /// and with <see cref="RetrievalClientOptions.ClientCertificate"/> it presents that certificate.
    /// </remarks>
    public static IHttpClientBuilder AddRetrievalClient(this IServiceCollection services, Action<RetrievalClientOptions> configure)
    {
        services.AddOptions<RetrievalClientOptions>().Configure(configure).Validate(o =>
        {
            o.Validate();
            if (!string.IsNullOrEmpty(o.TrustedCaPath))
            {
                TrustedAuthorities.Load(o.TrustedCaPath!); // a bad file fails the client's resolution, not its first call
            }
            return true;
        });
        services.AddTransient(sp => new RetrievalClient(
            sp.GetRequiredService<QueryTower.QueryTowerClient>(), sp.GetRequiredService<IOptions<RetrievalClientOptions>>().Value));
        return services
            .AddGrpcClient<QueryTower.QueryTowerClient>((sp, o) => o.Address = sp.GetRequiredService<IOptions<RetrievalClientOptions>>().Value.Address)
            .ConfigureChannel((sp, channel) => channel.ServiceConfig = RetrievalClient.ServiceConfig(sp.GetRequiredService<IOptions<RetrievalClientOptions>>().Value))
            .ConfigurePrimaryHttpMessageHandler((handler, sp) =>
                RetrievalClient.ConfigureTls(handler, sp.GetRequiredService<IOptions<RetrievalClientOptions>>().Value));
    }
}
