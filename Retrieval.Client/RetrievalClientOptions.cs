using System;
using System.Security.Cryptography.X509Certificates;

namespace Retrieval.Client;

/// <summary>How a <see cref="RetrievalClient"/> reaches the query tower service.</summary>
public sealed class RetrievalClientOptions
{
    /// <summary>
    /// The query tower service, for example <c>http://127.0.0.1:5100</c> (cleartext HTTP/2) or
    /// <c>https://query-tower:5100</c> (TLS; the certificate must be trusted by the system or by <see cref="TrustedCaPath"/>).
    /// </summary>
    public Uri Address { get; set; } = new Uri("http://127.0.0.1:5100");

    /// <summary>
    /// For an <c>https</c> address: a PEM file of the certificate authorities that issued the service's certificate (a
    /// private authority, or the certificate itself when it is self-signed). Only these are trusted, not the system's;
    /// the certificate must still name the address's host. Empty: the system's trusted authorities.
    /// </summary>
    public string? TrustedCaPath { get; set; }

    /// <summary>
    /// For an <c>https</c> address whose service asks for client certificates (mutual TLS): this caller's certificate,
    /// with its private key. Null: none presented.
    /// </summary>
    public X509Certificate2? ClientCertificate { get; set; }

    /// <summary>Deadline of each call unless the caller gives one. The service answers within it, degraded if need be.</summary>
    public TimeSpan Deadline { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Attempts per call (1 = no retry); retries only UNAVAILABLE, with exponential backoff.</summary>
    public int MaxAttempts { get; set; } = 3;

    /// <summary>First retry backoff; doubles per attempt up to <see cref="MaxBackoff"/>.</summary>
    public TimeSpan InitialBackoff { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Longest retry backoff.</summary>
    public TimeSpan MaxBackoff { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Checks the settings, with a message naming the one that is wrong.</summary>
    public void Validate()
    {
        if (Address is null || !Address.IsAbsoluteUri)
        {
            throw new ArgumentException("Address must be an absolute URI such as http://127.0.0.1:5100");
        }
        if (Deadline <= TimeSpan.Zero)
        {
            throw new ArgumentException($"Deadline must be positive, got {Deadline}");
        }
        if (MaxAttempts < 1 || MaxAttempts > 5)
        {
            throw new ArgumentException($"MaxAttempts must be between 1 and 5 (gRPC's limit), got {MaxAttempts}");
        }
        if (!string.IsNullOrEmpty(TrustedCaPath) && Address.Scheme != Uri.UriSchemeHttps)
        {
            throw new ArgumentException($"TrustedCaPath is for an https address, and Address is {Address}");
        }
        if (ClientCertificate is not null && (Address.Scheme != Uri.UriSchemeHttps || !ClientCertificate.HasPrivateKey))
        {
            throw new ArgumentException(Address.Scheme != Uri.UriSchemeHttps
                ? $"ClientCertificate is for an https address, and Address is {Address}"
                : $"ClientCertificate ({ClientCertificate.Subject}) has no private key, so it cannot authenticate the caller");
        }
    }
}
