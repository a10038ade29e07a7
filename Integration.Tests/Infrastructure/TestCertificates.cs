using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Retrieval.Integration.Tests.Infrastructure;

/// <summary>
/// A private certificate authority made for a test, and a server certificate it issued for 127.0.0.1 and localhost,
/// written as PEM files (authority, certificate, key) into a folder of their own.
/// </summary>
public sealed class TestCertificates
{
    public TestCertificates(string folder, string name)
    {
        Directory.CreateDirectory(folder);
        var now = DateTimeOffset.UtcNow;
        using var authorityKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var authorityRequest = new CertificateRequest($"CN=Retrieval test authority {name}", authorityKey, HashAlgorithmName.SHA256);
        authorityRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        authorityRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        authorityRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(authorityRequest.PublicKey, false));
        using var authority = authorityRequest.CreateSelfSigned(now.AddDays(-1), now.AddDays(30));

        using var serverKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var serverRequest = new CertificateRequest("CN=127.0.0.1", serverKey, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(System.Net.IPAddress.Loopback);
        names.AddDnsName("localhost");
        serverRequest.CertificateExtensions.Add(names.Build());
        serverRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        serverRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        serverRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false)); // server authentication
        serverRequest.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(authority, true, false));
        using var server = serverRequest.Create(authority, now.AddDays(-1), now.AddDays(30), RandomNumberGenerator.GetBytes(8));

        Authority = X509CertificateLoader.LoadCertificate(authority.RawData);
        AuthorityPath = Path.Combine(folder, $"{name}-ca.pem");
        CertificatePath = Path.Combine(folder, $"{name}-server.pem");
        KeyPath = Path.Combine(folder, $"{name}-server.key");
        File.WriteAllText(AuthorityPath, authority.ExportCertificatePem());
        File.WriteAllText(CertificatePath, server.ExportCertificatePem());
        File.WriteAllText(KeyPath, serverKey.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>The authority's certificate (public part).</summary>
    public X509Certificate2 Authority { get; }
    public string AuthorityPath { get; }
    public string CertificatePath { get; }
    public string KeyPath { get; }

    /// <summary>A service's command-line settings to serve its https urls with the server certificate (Kestrel's own settings).</summary>
    public string[] KestrelArgs => ["--Kestrel:Certificates:Default:Path", CertificatePath, "--Kestrel:Certificates:Default:KeyPath", KeyPath];

    /// <summary>A handler for the tests' own channels that trusts this authority alone.</summary>
    public SocketsHttpHandler TrustingHandler()
    {
        var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
        {
            if (certificate is null || (errors & ~System.Net.Security.SslPolicyErrors.RemoteCertificateChainErrors) != 0)
            {
                return false;
            }
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(Authority);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            return chain.Build(X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()));
        };
        return handler;
    }
}
