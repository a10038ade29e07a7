using System;
using System.Collections.Generic;
using System.Net.Http;
using System.Security.Cryptography.X509Certificates;
using System.Threading;
using System.Threading.Tasks;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Configuration;
using Retrieval.Tls;
using Retrieval.V1;

namespace Retrieval.Client;

/// <summary>
/// A typed client for the query tower service: <see cref="RecommendAsync(string, int, DateTimeOffset?, IEnumerable{int}?, bool, DateTime?, CancellationToken)"/> and <see cref="EmbedAsync(string, DateTimeOffset?, DateTime?, CancellationToken)"/> with a
/// default deadline, the caller's cancellation, and retries of UNAVAILABLE through gRPC's own retry policy.
/// Thread-safe; create one per process (or let <see cref="ServiceCollectionExtensions.AddRetrievalClient"/> do it).
/// </summary>
public sealed class RetrievalClient : IDisposable
{
    private readonly QueryTower.QueryTowerClient _client;
    private readonly GrpcChannel? _ownedChannel;
    private readonly TimeSpan _deadline;

    /// <summary>Wraps a generated client, for example one made by the gRPC client factory.</summary>
    public RetrievalClient(QueryTower.QueryTowerClient client, RetrievalClientOptions options)
    {
        options.Validate();
        _client = client;
        _deadline = options.Deadline;
    }

    private RetrievalClient(GrpcChannel channel, RetrievalClientOptions options)
        : this(new QueryTower.QueryTowerClient(channel), options)
    {
        _ownedChannel = channel;
    }

    /// <summary>A client with its own channel; dispose it to close the channel.</summary>
    /// <exception cref="ArgumentException">A setting is wrong, or <see cref="RetrievalClientOptions.TrustedCaPath"/> cannot be read.</exception>
    public static RetrievalClient Create(RetrievalClientOptions options)
    {
        options.Validate();
        var channelOptions = ChannelOptions(options);
        if (!string.IsNullOrEmpty(options.TrustedCaPath) || options.ClientCertificate is not null)
        {
#if NET5_0_OR_GREATER
            var handler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true };
#else
            var handler = new HttpClientHandler();
#endif
            ConfigureTls(handler, options);
            channelOptions.HttpHandler = handler; // the channel disposes it
        }
        return new RetrievalClient(GrpcChannel.ForAddress(options.Address, channelOptions), options);
    }

    /// <summary>
    /// Applies <see cref="RetrievalClientOptions.TrustedCaPath"/> (only server certificates those authorities issued are
    /// accepted) and <see cref="RetrievalClientOptions.ClientCertificate"/> (presented to the service) to a handler.
    /// </summary>
    internal static void ConfigureTls(HttpMessageHandler handler, RetrievalClientOptions options)
    {
        var trusted = string.IsNullOrEmpty(options.TrustedCaPath) ? null : TrustedAuthorities.Load(options.TrustedCaPath!);
        var certificate = options.ClientCertificate;
        switch (handler)
        {
#if NET5_0_OR_GREATER
            case SocketsHttpHandler sockets:
                if (trusted is not null)
                {
                    sockets.SslOptions.RemoteCertificateValidationCallback = (_, c, chain, errors) => trusted.ValidateServer(c, chain, errors);
                }
                if (certificate is not null)
                {
                    sockets.SslOptions.ClientCertificates = new X509CertificateCollection { certificate };
                }
                break;
#endif
            case HttpClientHandler client:
                if (trusted is not null)
                {
                    client.ServerCertificateCustomValidationCallback = (_, c, chain, errors) => trusted.ValidateServer(c, chain, errors);
                }
                if (certificate is not null)
                {
                    client.ClientCertificateOptions = ClientCertificateOption.Manual;
                    client.ClientCertificates.Add(certificate);
                }
                break;
            default:
                if (trusted is not null || certificate is not null)
                {
                    throw new NotSupportedException($"TrustedCaPath and ClientCertificate cannot be applied to a {handler.GetType().Name}: "
                        + "give the client a SocketsHttpHandler or an HttpClientHandler");
                }
                break;
        }
    }

    /// <summary>A client with its own channel to <paramref name="address"/> and default settings.</summary>
    public static RetrievalClient Create(string address) => Create(new RetrievalClientOptions { Address = new Uri(address) });

    /// <summary>Channel settings with the retry policy (UNAVAILABLE only, exponential backoff).</summary>
    public static GrpcChannelOptions ChannelOptions(RetrievalClientOptions options) => new GrpcChannelOptions
    {
        ServiceConfig = ServiceConfig(options),
    };

    /// <summary>The service config carrying the retry policy for every method of the service.</summary>
    public static ServiceConfig ServiceConfig(RetrievalClientOptions options)
    {
        var config = new ServiceConfig();
        if (options.MaxAttempts > 1)
        {
            config.MethodConfigs.Add(new MethodConfig
            {
                Names = { MethodName.Default },
                RetryPolicy = new RetryPolicy
                {
                    MaxAttempts = options.MaxAttempts,
                    InitialBackoff = options.InitialBackoff,
                    MaxBackoff = options.MaxBackoff,
                    BackoffMultiplier = 2,
                    RetryableStatusCodes = { StatusCode.Unavailable },
                },
            });
        }
        return config;
    }

    /// <summary>The generated client, for calls this wrapper does not cover.</summary>
    public QueryTower.QueryTowerClient Raw => _client;

    /// <summary>
    /// Recommends <paramref name="k"/> movies for a user at a time (default now). Unknown users are not an error.
    /// </summary>
    /// <param name="userId">The user id of the training data (1 to 256 characters).</param>
    /// <param name="k">How many movies (1 to the server's cap, 1,000 by default).</param>
    /// <param name="at">When the recommendation is for; null means now.</param>
    /// <param name="excludeMovieIds">Movie ids to leave out.</param>
    /// <param name="excludeRated">Leave out the movies the user rated in the training data.</param>
    /// <param name="deadline">Overrides the default deadline of this client.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The movies best first, the model version, and whether the answer is a degraded fallback.</returns>
    /// <exception cref="RpcException">INVALID_ARGUMENT naming the field for bad input; UNAVAILABLE when no model is loaded; RESOURCE_EXHAUSTED when the service already has as many calls in flight as it takes (its Server:MaxCallsInFlight; not retried by this client).</exception>
    public Task<RecommendResponse> RecommendAsync(string userId, int k = 10, DateTimeOffset? at = null,
        IEnumerable<int>? excludeMovieIds = null, bool excludeRated = false, DateTime? deadline = null,
        CancellationToken cancellationToken = default) =>
        RecommendAsync(Context(userId, at), k, excludeMovieIds, excludeRated, deadline, cancellationToken);

    /// <summary>
    /// Recommends <paramref name="k"/> movies for a full query context: user, time, and the demographics and rating
    /// activity the caller has (the model's features that lack a value use their out-of-vocabulary row).
    /// </summary>
    /// <param name="context">Who and when, and optionally <see cref="QueryContext.Demographics"/> and <see cref="QueryContext.Activity"/>.</param>
    /// <param name="k">How many movies (1 to the server's cap, 1,000 by default).</param>
    /// <param name="excludeMovieIds">Movie ids to leave out.</param>
    /// <param name="excludeRated">Leave out the movies the user rated in the training data.</param>
    /// <param name="deadline">Overrides the default deadline of this client.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The movies best first, the model version, and whether the answer is a degraded fallback.</returns>
    /// <exception cref="RpcException">INVALID_ARGUMENT naming the field for bad input; UNAVAILABLE when no model is loaded; RESOURCE_EXHAUSTED when the service already has as many calls in flight as it takes (its Server:MaxCallsInFlight; not retried by this client).</exception>
    public Task<RecommendResponse> RecommendAsync(QueryContext context, int k = 10, IEnumerable<int>? excludeMovieIds = null,
        bool excludeRated = false, DateTime? deadline = null, CancellationToken cancellationToken = default)
    {
        var request = new RecommendRequest { Context = context, K = k, ExcludeRated = excludeRated };
        if (excludeMovieIds is not null)
        {
            request.ExcludeMovieIds.AddRange(excludeMovieIds);
        }
        return _client.RecommendAsync(request, Options(deadline, cancellationToken)).ResponseAsync;
    }

    /// <summary>
    /// Recommend as a stream: the movies arrive in chunks as the candidate tower finds them (ranks continue across
    /// messages; each carries the model version). A degraded answer arrives as one message.
    /// </summary>
    /// <param name="context">Who and when, and optionally demographics and rating activity.</param>
    /// <param name="k">How many movies in all.</param>
    /// <param name="excludeMovieIds">Movie ids to leave out.</param>
    /// <param name="excludeRated">Leave out the movies the user rated in the training data.</param>
    /// <param name="deadline">Overrides the default deadline of this client.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <exception cref="RpcException">INVALID_ARGUMENT naming the field for bad input; UNAVAILABLE when the stream broke midway; RESOURCE_EXHAUSTED when the service is at its Server:MaxCallsInFlight.</exception>
    public async IAsyncEnumerable<RecommendResponse> RecommendStreamAsync(QueryContext context, int k = 10,
        IEnumerable<int>? excludeMovieIds = null, bool excludeRated = false, DateTime? deadline = null,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = new RecommendRequest { Context = context, K = k, ExcludeRated = excludeRated };
        if (excludeMovieIds is not null)
        {
            request.ExcludeMovieIds.AddRange(excludeMovieIds);
        }
        using var call = _client.RecommendStream(request, Options(deadline, cancellationToken));
        while (await call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false))
        {
            yield return call.ResponseStream.Current;
        }
    }

    /// <summary>The query embedding of a user at a time (default now), with the model version that computed it.</summary>
    /// <param name="userId">The user id of the training data.</param>
    /// <param name="at">When; null means now.</param>
    /// <param name="deadline">Overrides the default deadline of this client.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    public Task<EmbedResponse> EmbedAsync(string userId, DateTimeOffset? at = null, DateTime? deadline = null,
        CancellationToken cancellationToken = default) =>
        EmbedAsync(Context(userId, at), deadline, cancellationToken);

    /// <summary>The query embedding of a full query context (user, time, demographics, activity).</summary>
    /// <param name="context">Who and when, and optionally demographics and rating activity.</param>
    /// <param name="deadline">Overrides the default deadline of this client.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    public Task<EmbedResponse> EmbedAsync(QueryContext context, DateTime? deadline = null, CancellationToken cancellationToken = default) =>
        _client.EmbedAsync(new EmbedRequest { Context = context }, Options(deadline, cancellationToken)).ResponseAsync;

    private static QueryContext Context(string userId, DateTimeOffset? at)
    {
        var context = new QueryContext { UserId = userId ?? "" };
        if (at is { } time)
        {
            context.Timestamp = Timestamp.FromDateTimeOffset(time);
        }
        return context;
    }

    private CallOptions Options(DateTime? deadline, CancellationToken cancellationToken) =>
        new CallOptions(deadline: deadline ?? DateTime.UtcNow + _deadline, cancellationToken: cancellationToken);

    /// <summary>Closes the channel when this client created it.</summary>
    public void Dispose() => _ownedChannel?.Dispose();
}
