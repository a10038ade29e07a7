using System.Diagnostics.Metrics;
using Grpc.AspNetCore.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using Retrieval.Core.Serving;

namespace Retrieval.ServiceDefaults;

/// <summary>
/// What both gRPC services share: Kestrel endpoints as HTTP/2 on the configured urls (gRPC without TLS needs an
/// HTTP/2-only endpoint; https ones take Kestrel's certificate settings, and ask for client certificates with
/// Tls:ClientCaPath), the model store and its hosted start, gRPC health (SERVING once a model is
/// loaded) and reflection, and OpenTelemetry metrics served to Prometheus on Metrics:Url (its own HTTP/1.1 listener).
/// </summary>
public static class ServiceDefaultsExtensions
{
    public static WebApplicationBuilder AddServiceDefaults(this WebApplicationBuilder builder, params string[] meters)
    {
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(endpoint => endpoint.Protocols = HttpProtocols.Http2));
        if (builder.Configuration.GetValue<bool>("Transport:InlineIO"))
        {
            UseInlineIO(builder);
        }

        builder.Services.AddOptions<ModelOptions>().BindConfiguration(ModelOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<ServerOptions>().BindConfiguration(ServerOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<TlsOptions>().BindConfiguration(TlsOptions.Section).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<TlsOptions>, TlsOptionsValidation>();
        TlsOptions.RequireClientCertificates(builder);
        builder.Services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<IOptions<ModelOptions>>().Value;
            return new ModelStore(new ModelStoreSettings(options.Directory, TimeSpan.FromSeconds(options.GracePeriodSeconds),
                TimeSpan.FromSeconds(options.PollIntervalSeconds)), sp.GetRequiredService<ILoggerFactory>().CreateLogger<ModelStore>());
        });
        builder.Services.AddHostedService<ModelStoreHost>();
        if (builder.Configuration["Lifetime:ParentProcessId"] is { Length: > 0 } parent)
        {
            int parentId = int.TryParse(parent, out var id) && id > 0
                ? id : throw new ArgumentException($"Lifetime:ParentProcessId must be a process id, got '{parent}'");
            builder.Services.AddHostedService(sp => new ParentProcessWatch(parentId, sp.GetRequiredService<IHostApplicationLifetime>(),
                sp.GetRequiredService<ILogger<ParentProcessWatch>>()));
        }

        builder.Services.AddGrpcHealthChecks().AddCheck<ModelLoadedHealthCheck>("model");
        builder.Services.AddGrpcReflection();

        var metricsUrl = builder.Configuration["Metrics:Url"];
        builder.Services.AddOpenTelemetry().WithMetrics(metrics =>
        {
            metrics.AddMeter(ModelStore.Meter.Name);
            // The runtime's own: collections and their pause time, thread-pool queue and threads, CPU time. A service's
            // latency tail follows its collections (bench/README.md).
            metrics.AddMeter("System.Runtime");
            foreach (var meter in meters)
            {
                metrics.AddMeter(meter);
            }
            // Kestrel's connection metrics, not the per-request HTTP ones (ASP.NET Core's instrumentation adds a middleware
            // and a histogram record per request, allocations the gRPC request metrics above make redundant).
            metrics.AddMeter("Microsoft.AspNetCore.Server.Kestrel");
            if (!string.IsNullOrEmpty(metricsUrl))
            {
                // Prometheus scrapes with HTTP/1.1, which the HTTP/2-only gRPC endpoints cannot speak.
                var uri = new Uri(metricsUrl);
                metrics.AddPrometheusHttpListener(o =>
                {
                    o.Host = uri.Host;
                    o.Port = uri.Port;
                    o.ScrapeEndpointPath = uri.AbsolutePath == "/" ? "/metrics" : uri.AbsolutePath;
                });
            }
        });
        return builder;
    }

    /// <summary>
    /// Transport:InlineIO: socket completions run on the socket engine's epoll threads (the runtime's
    /// DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS, set here before the process opens a socket) and Kestrel runs its
    /// connections' read and write continuations inline there, instead of each hopping to the thread pool: fewer
    /// thread wake-ups per call. HTTP/2 requests still run on the thread pool, but anything a handler does
    /// synchronously on a continuation delays every connection on that epoll thread, so it suits fast handlers.
    /// </summary>
    private static void UseInlineIO(WebApplicationBuilder builder)
    {
        Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
        builder.WebHost.UseSockets(sockets => sockets.UnsafePreferInlineScheduling = true);
    }

    /// <summary>
    /// Request counts and latency by method and status (<c>{prefix}.requests</c>, <c>{prefix}.latency</c>) through one
    /// interceptor on every call, and the calls refused or dropped unread (<see cref="CallAdmission"/>,
    /// <see cref="AbandonedCalls"/>). The interceptor is a singleton: unless it is registered, gRPC makes one per call.
    /// </summary>
    public static IServiceCollection AddRequestMetrics(this IServiceCollection services, string meterName, string prefix)
    {
        services.AddSingleton(sp => new RequestMetrics(sp.GetRequiredService<IMeterFactory>(), meterName, prefix));
        services.AddSingleton<RequestMetricsInterceptor>();
        services.Configure<GrpcServiceOptions>(grpc => grpc.Interceptors.Add<RequestMetricsInterceptor>());
        return services;
    }

    /// <summary>
    /// Builds the service, lets <paramref name="pipeline"/> set up its middleware and endpoints, and runs it until it
    /// stops (exit code 0). A setting out of its range ends it at start with exit code 2 and one line on standard error
    /// naming the setting and its range, rather than an unhandled exception's stack trace.
    /// </summary>
    public static int RunService(this WebApplicationBuilder builder, Action<WebApplication> pipeline)
    {
        try
        {
            var app = builder.Build();
            // The settings checked at start (ValidateOnStart) are checked here first: the host would otherwise log
            // "Hosting failed to start" with the exception's stack trace before the line below.
            app.Services.GetService<IStartupValidator>()?.Validate();
            pipeline(app);
            app.Run();
            return 0;
        }
        catch (OptionsValidationException e)
        {
            Console.Error.WriteLine(ConfigurationError(e));
            return 2;
        }
        catch (AggregateException e) when (e.InnerExceptions.All(inner => inner is OptionsValidationException))
        {
            foreach (var inner in e.InnerExceptions)
            {
                Console.Error.WriteLine(ConfigurationError((OptionsValidationException)inner));
            }
            return 2;
        }
    }

    /// <summary>One line naming the section (each options class of the services has a Section constant) and what is wrong.</summary>
    private static string ConfigurationError(OptionsValidationException e)
    {
        var section = e.OptionsType.GetField("Section")?.GetValue(null) as string;
        return $"configuration error{(section is null ? "" : $" in section {section}")}: {string.Join("; ", e.Failures)}";
    }

    public static WebApplication MapServiceDefaults(this WebApplication app)
    {
        app.MapGrpcHealthChecksService();
        app.MapGrpcReflectionService();
        return app;
    }
}

/// <summary>SERVING only once a model version is loaded.</summary>
public sealed class ModelLoadedHealthCheck(ModelStore store) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(store.Current is { } model
            ? HealthCheckResult.Healthy($"serving model version {model.Version}")
            : HealthCheckResult.Unhealthy($"no model loaded yet from {store.Directory}"));
}

/// <summary>Starts the model store with the host, without holding up start-up: health says when a model is in.</summary>
public sealed class ModelStoreHost(ModelStore store, ILogger<ModelStoreHost> log) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        _ = Task.Run(async () =>
        {
            try
            {
                await store.StartAsync(CancellationToken.None);
                if (store.Current is null)
                {
                    log.LogWarning("No model published yet in {Directory}; waiting for one (health: NOT_SERVING)", store.Directory);
                }
            }
            catch (Exception e)
            {
                log.LogError(e, "Could not start watching {Directory}", store.Directory);
            }
        }, CancellationToken.None);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        store.Dispose();
        return Task.CompletedTask;
    }
}
