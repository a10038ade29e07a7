using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using Retrieval.Tls;

namespace Retrieval.ServiceDefaults;

/// <summary>
/// TLS settings of a service as a server (configuration section <c>Tls</c>). Its certificate is Kestrel's own setting
/// (<c>Kestrel:Certificates:Default:Path</c> and <c>KeyPath</c>, with an https url).
/// </summary>
public sealed class TlsOptions
{
    public const string Section = "Tls";

    /// <summary>
    /// Mutual TLS: a PEM file of the authorities whose client certificates may call the service. Every https
    /// connection must then present a certificate issued by one of them (and, if it lists purposes, for client
    /// authentication); others fail the handshake. Empty: no client certificate asked for.
    /// </summary>
    public string? ClientCaPath { get; set; }

    /// <summary>Asks every https endpoint for a client certificate from <see cref="ClientCaPath"/>'s authorities, when it is set.</summary>
    internal static void RequireClientCertificates(WebApplicationBuilder builder) =>
        builder.WebHost.ConfigureKestrel((context, kestrel) =>
        {
            if (context.Configuration[$"{Section}:{nameof(ClientCaPath)}"] is { Length: > 0 } path)
            {
                // Read when the first https endpoint is set up, after TlsOptionsValidation has checked the file at start.
                var trusted = new Lazy<TrustedAuthorities>(() => TrustedAuthorities.Load(path));
                kestrel.ConfigureHttpsDefaults(https =>
                {
                    https.ClientCertificateMode = ClientCertificateMode.RequireCertificate;
                    https.ClientCertificateValidation = (certificate, chain, errors) => trusted.Value.ValidateClient(certificate, chain, errors);
                });
            }
        });
}

/// <summary>Checks at start that ClientCaPath holds a certificate and that the service has an https url to ask on.</summary>
internal sealed class TlsOptionsValidation(IConfiguration configuration) : IValidateOptions<TlsOptions>
{
    public ValidateOptionsResult Validate(string? name, TlsOptions options)
    {
        if (string.IsNullOrEmpty(options.ClientCaPath))
        {
            return ValidateOptionsResult.Success;
        }
        if (TlsTrust.Problem(options.ClientCaPath) is { } problem)
        {
            return ValidateOptionsResult.Fail($"'{nameof(TlsOptions.ClientCaPath)}': {problem}");
        }
        var urls = (configuration["urls"] ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Concat(configuration.GetSection("Kestrel:Endpoints").GetChildren().Select(e => e["Url"] ?? ""))
            .Where(u => u.Length > 0).ToList();
        return urls.Any(u => u.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            ? ValidateOptionsResult.Success
            : ValidateOptionsResult.Fail($"'{nameof(TlsOptions.ClientCaPath)}' asks callers for certificates, which needs an https url "
                + $"(such as --urls https://0.0.0.0:5100 with --Kestrel:Certificates:Default:Path), and the service listens on {string.Join(", ", urls)}");
    }
}
