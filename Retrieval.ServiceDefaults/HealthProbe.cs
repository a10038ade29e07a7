using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;

namespace Retrieval.ServiceDefaults;

/// <summary>
/// `SERVICE healthcheck [ADDRESS [CA_FILE [CERT_FILE KEY_FILE]]]`: asks a running service's grpc.health.v1 whether it is
/// SERVING and exits 0 or 1 (2: the files cannot be read). Container health checks use it, since the runtime images
/// carry no other gRPC probe. For an https address whose certificate a private authority issued, CA_FILE is that
/// authority's PEM file (or the self-signed certificate); a service that asks for client certificates (Tls:ClientCaPath)
/// also needs one, CERT_FILE and KEY_FILE (PEM).
/// </summary>
public static class HealthProbe
{
    public static bool IsRequested(string[] args) => args.Length > 0 && args[0] == "healthcheck";

    public static async Task<int> RunAsync(string[] args, string defaultAddress)
    {
        var address = args.Length > 1 ? args[1] : defaultAddress;
        try
        {
            var options = new GrpcChannelOptions();
            if (args.Length is 4 or > 5)
            {
                throw new ArgumentException("expected ADDRESS [CA_FILE [CERT_FILE KEY_FILE]]: a client certificate's file and its key's go together");
            }
            if (args.Length > 2)
            {
                var handler = new SocketsHttpHandler();
                TlsTrust.TrustOnly(handler, args[2]);
                if (args.Length == 5)
                {
                    TlsTrust.PresentCertificate(handler, args[3], args[4]);
                }
                options.HttpHandler = handler;
            }
            using var channel = GrpcChannel.ForAddress(address, options);
            var reply = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(3));
            Console.WriteLine($"{address}: {reply.Status}");
            return reply.Status == HealthCheckResponse.Types.ServingStatus.Serving ? 0 : 1;
        }
        catch (RpcException e)
        {
            Console.WriteLine($"{address}: {e.Status.StatusCode} ({e.Status.Detail})");
            return 1;
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"healthcheck: {e.Message}");
            return 2;
        }
    }
}
